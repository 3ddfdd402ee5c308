"""Resident memory of a Linux process from /proc: its current RSS, its peak, and a peak restarted at will.
The memory tests and benchmarks report peaks, so that transient copies count."""


def status_bytes(field, pid="self"):
    """A memory field of /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile, ...) in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid="self"):
    """Restart the peak RSS (VmHWM) from the current RSS (clear_refs 5; Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


class PeakGrowth:
    """``with PeakGrowth(pid) as peak: ...`` sets ``peak.start`` (the RSS when the block starts, the peak
    restarted there) and, when it ends, ``peak.peak`` and ``peak.growth`` (peak minus start), in bytes."""

    def __init__(self, pid="self"):
        self.pid = pid

    def __enter__(self):
        reset_peak(self.pid)
        self.start = status_bytes("VmRSS", self.pid)
        return self

    def __exit__(self, *exc):
        self.peak = status_bytes("VmHWM", self.pid)
        self.growth = self.peak - self.start

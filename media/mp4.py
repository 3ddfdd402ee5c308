"""H.264 MP4 writing and reading through the ffmpeg binary shipped by imageio-ffmpeg (pure Python).

Metadata is written the way ComfyUI's own video saver writes it (container tags with
``movflags use_metadata_tags``: ``prompt`` = the API-format prompt as JSON, ``workflow`` = the UI
graph as JSON), so dragging the MP4 into ComfyUI restores the graph.
"""

import math
import os
import subprocess
import tempfile

import imageio_ffmpeg
import numpy as np


def _ffmpeg():
    return imageio_ffmpeg.get_ffmpeg_exe()


def _escape_ffmetadata(text):
    for ch in ("\\", "=", ";", "#", "\n"):
        text = text.replace(ch, "\\" + ch)
    return text


def to_uint8_frames(frames):
    """(T, H, W, 3) floats in 0..1 (torch or numpy) or uint8 -> contiguous uint8 numpy (T, H, W, 3)."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().float().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames shaped (T, H, W, 3), got {tuple(frames.shape)}")
    return np.ascontiguousarray(frames)


def write_mp4(path, frames, fps=25.0, crf=19, metadata=None):
    """Encode ``frames`` (T, H, W, 3) to H.264 (yuv420p, odd sizes padded to even) at ``path``.

    metadata: {tag: text} container tags (e.g. {"prompt": json, "workflow": json}).
    Frames are streamed to ffmpeg one at a time. Returns ``path``.
    """
    frames = to_uint8_frames(frames)
    count, height, width, _ = frames.shape
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = os.path.join(tmp, "metadata.txt")
        with open(meta_path, "w", encoding="utf-8") as f:
            f.write(";FFMETADATA1\n")
            for key, value in (metadata or {}).items():
                f.write(f"{_escape_ffmetadata(key)}={_escape_ffmetadata(value)}\n")
        cmd = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "-",
               "-f", "ffmetadata", "-i", meta_path, "-map", "0:v", "-map_metadata", "1",
               "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
               "-crf", str(int(crf)), "-movflags", "+faststart+use_metadata_tags", path]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for frame in frames:
                proc.stdin.write(frame.tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        error = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise RuntimeError(f"ffmpeg could not write {path} ({count} frames {width}x{height}): {error.strip()}")
    return path


def read_mp4_metadata(path):
    """{tag: text} container tags of a video file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "meta.txt")
        subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", path, "-f", "ffmetadata", out],
                       check=True, capture_output=True)
        with open(out, encoding="utf-8") as f:
            text = f.read()
    return _parse_ffmetadata(text)


def _parse_ffmetadata(text):
    """Global ``key=value`` entries of an FFMETADATA1 text (backslash escapes any char, newline included)."""
    tags, key, field, escaped = {}, None, [], False
    for ch in text.split("\n", 1)[1] + "\n":
        if escaped:
            field.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "=" and key is None:
            key, field = "".join(field), []
        elif ch == "\n":
            line = "".join(field)
            if key is not None:
                tags[key] = line
            elif line.startswith("["):
                break  # stream/chapter sections follow the global tags
            key, field = None, []
        else:
            field.append(ch)
    return tags


class NotAVideo(ValueError):
    """A file ffmpeg cannot read as a video; the message is one line naming the file and ffmpeg's reason."""


def _reason(error):
    """The last line of ffmpeg's complaint (its banner and probing notes dropped)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.startswith("===")]
    return lines[-1] if lines else type(error).__name__


def open_video(path, skip=0, limit=0):
    """(info, frames) of a video file, decoding only frames ``skip`` .. ``skip + limit`` (limit 0: to the end).

    info: {"width", "height", "fps", "frames"} where "frames" is the container's estimate of the whole
    clip (duration x fps; None if unknown). frames: VideoFrames, uint8 numpy (H, W, 3) frames streamed
    from the ffmpeg subprocess one at a time (ffmpeg skips the first ``skip`` frames itself and stops after
    ``limit``); closing it stops ffmpeg. NotAVideo (one line) when ffmpeg cannot read ``path``.
    """
    output = ["-vf", f"trim=start_frame={int(skip)},setpts=PTS-STARTPTS"] + (["-frames:v", str(int(limit))]
                                                                              if limit else [])
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24", output_params=output)
    try:
        meta = next(reader)
        width, height = meta["size"]
    except Exception as e:  # imageio-ffmpeg raises OSError with ffmpeg's whole log, others for odd headers
        reader.close()
        raise NotAVideo(f"{path} is not a video ffmpeg can read: {_reason(e)}") from None
    duration, fps = meta.get("duration"), meta.get("fps")
    estimate = round(duration * fps) if duration and fps and math.isfinite(duration * fps) else None
    return {"width": width, "height": height, "fps": fps, "frames": estimate}, VideoFrames(reader, height, width)


class VideoFrames:
    """Iterates uint8 numpy (H, W, 3) frames from imageio-ffmpeg's reader; close() stops ffmpeg early."""

    def __init__(self, reader, height, width):
        self.reader, self.height, self.width = reader, height, width

    def __iter__(self):
        for buffer in self.reader:
            yield np.frombuffer(buffer, dtype=np.uint8).reshape(self.height, self.width, 3)

    def close(self):
        self.reader.close()


def read_mp4_frames(path, skip=0, limit=0):
    """Frames ``skip`` .. ``skip + limit`` (limit 0: all) of a video file as uint8 numpy (T, H, W, 3), and
    the frame rate."""
    info, frames = open_video(path, skip, limit)
    frames = list(frames)
    stacked = np.stack(frames) if frames else np.zeros((0, info["height"], info["width"], 3), np.uint8)
    return stacked, info["fps"]

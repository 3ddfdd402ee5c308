"""The one error type a user sees when weight files are missing, damaged or in the wrong slot."""


class CheckpointError(ValueError):
    """A weight file or folder that cannot be loaded; the message names the path and what is wrong."""


def examples(items, limit=4):
    """``'a', 'b', 'c' and 7 more`` — a short, sorted sample of a collection for error messages."""
    items = sorted(items)
    shown = ", ".join(repr(i) for i in items[:limit])
    if len(items) > limit:
        shown += f" and {len(items) - limit} more"
    return shown

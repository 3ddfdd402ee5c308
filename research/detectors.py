"""A small hand-written detector for the synthetic clips: which colour, which shape, what it does.

    d = detect(video)        # video (F, H, W, 3) in [0, 1], numpy or torch
    d.colour, d.shape, d.action, d.colour_end   # "red", "circle", "left", "red"

How it works (no learning, so it can judge the learnt model):
* shape pixels = HSV saturation > 0.5 and value > 0.35 (the generator's shapes are saturated, its
  backgrounds are greys/muted tints with saturation <= 0.18), cleaned by a 3x3 majority filter;
* colour = the palette colour nearest in hue to the saturation-weighted circular mean hue;
* shape from how full the four corners of the pixels' bounding box are (each corner = a quarter of
  the box's width and height), median over the frames: an upward triangle has empty top corners and
  full bottom ones (bottom - top > 0.4), a square four full corners (mean > 0.6), a circle four
  mostly empty ones. Corners survive blur and blockiness better than the plain fill ratio;
* action from the first and last three frames where a shape is seen: a hue change of more than 35
  degrees that lands on another palette colour = "recolour"; else an area ratio above 1.4 (below 1/1.4)
  = "grow" ("shrink"); else a centre displacement above 6% of the width along the dominant axis =
  "left"/"right"/"up"/"down"; else "still".
"""

from dataclasses import dataclass

import numpy as np

from research.synthetic_data import COLOURS, COLOUR_NAMES

SATURATION_MIN, VALUE_MIN = 0.5, 0.35
MIN_AREA = 0.002  # fraction of the frame below which no shape is seen in a frame
TRIANGLE_CORNER_GAP, SQUARE_CORNERS = 0.4, 0.6
HUE_CHANGE, AREA_CHANGE, MOVE_MIN = 35.0, 1.4, 0.06
EDGE_FRAMES = 3


def _hue_degrees(rgb):
    """Hue in degrees [0, 360) of (..., 3) RGB."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    delta = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / delta) % 6, np.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4))
    return (hue * 60.0) % 360.0


PALETTE_HUES = _hue_degrees(np.array([c[2] for c in COLOURS], dtype=np.float64))


def hue_distance(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b)) % 360.0
    return np.minimum(d, 360.0 - d)


def nearest_colour(hue):
    return COLOUR_NAMES[int(np.argmin(hue_distance(PALETTE_HUES, hue)))]


def as_frames(video):
    """numpy (F, H, W, 3) float in [0, 1] from numpy or torch (F, H, W, 3)."""
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    video = np.asarray(video, dtype=np.float32)
    if video.ndim == 3:
        video = video[None]
    return np.clip(video, 0.0, 1.0)


def shape_mask(frames):
    """(F, H, W) bool: saturated, bright pixels after a 3x3 majority filter."""
    mx, mn = frames.max(-1), frames.min(-1)
    raw = ((mx - mn) / np.maximum(mx, 1e-6) > SATURATION_MIN) & (mx > VALUE_MIN)
    padded = np.pad(raw.astype(np.int16), ((0, 0), (1, 1), (1, 1)))
    height, width = raw.shape[1:]
    votes = sum(padded[:, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3))
    return votes >= 5


@dataclass
class FrameStats:
    area: float  # fraction of the frame
    cx: float  # centre, fractions of the width
    cy: float
    top: float  # fill of the bounding box's top corners (mean of the two), in [0, 1]
    bottom: float  # same, bottom corners
    hue: float  # degrees


@dataclass
class Detection:
    colour: str = None  # at the start
    colour_end: str = None
    shape: str = None
    action: str = None
    dx: float = 0.0  # centre displacement, fractions of the width (x right, y down)
    dy: float = 0.0
    area_ratio: float = 1.0
    hue_change: float = 0.0
    seen: float = 0.0  # fraction of frames where a shape was found

    @property
    def found(self):
        return self.colour is not None


def frame_stats(frame, mask):
    area = int(mask.sum())
    height, width = mask.shape
    if area < MIN_AREA * height * width:
        return None
    ys, xs = np.nonzero(mask)
    box = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    dy, dx = max(1, box.shape[0] // 4), max(1, box.shape[1] // 4)
    top = (box[:dy, :dx].mean() + box[:dy, -dx:].mean()) / 2
    bottom = (box[-dy:, :dx].mean() + box[-dy:, -dx:].mean()) / 2
    pixels = frame[mask]
    mx, mn = pixels.max(-1), pixels.min(-1)
    weight = (mx - mn) / np.maximum(mx, 1e-6)
    angle = np.deg2rad(_hue_degrees(pixels))
    hue = np.rad2deg(np.arctan2((weight * np.sin(angle)).sum(), (weight * np.cos(angle)).sum())) % 360.0
    return FrameStats(area / (height * width), (xs.mean() + 0.5) / width, (ys.mean() + 0.5) / width, float(top),
                      float(bottom), hue)


def detect(video):
    """Detection of the single shape in ``video`` (F, H, W, 3) in [0, 1]; fields None if none is seen."""
    frames = as_frames(video)
    masks = shape_mask(frames)
    stats = [frame_stats(f, m) for f, m in zip(frames, masks)]
    seen = [s for s in stats if s is not None]
    result = Detection(seen=len(seen) / len(frames))
    if not seen:
        return result
    head, tail = seen[:EDGE_FRAMES], seen[-EDGE_FRAMES:]

    def mean(items, name):
        return float(np.mean([getattr(s, name) for s in items]))

    def mean_hue(items):
        angles = np.deg2rad([s.hue for s in items])
        return float(np.rad2deg(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())) % 360.0)

    hue0, hue1 = mean_hue(head), mean_hue(tail)
    result.colour, result.colour_end = nearest_colour(hue0), nearest_colour(hue1)
    result.hue_change = float(hue_distance(hue0, hue1))
    top, bottom = float(np.median([s.top for s in seen])), float(np.median([s.bottom for s in seen]))
    if bottom - top > TRIANGLE_CORNER_GAP:
        result.shape = "triangle"
    elif (top + bottom) / 2 > SQUARE_CORNERS:
        result.shape = "square"
    else:
        result.shape = "circle"
    result.dx, result.dy = mean(tail, "cx") - mean(head, "cx"), mean(tail, "cy") - mean(head, "cy")
    result.area_ratio = mean(tail, "area") / max(mean(head, "area"), 1e-9)
    if result.hue_change > HUE_CHANGE and result.colour_end != result.colour:
        result.action = "recolour"
    elif result.area_ratio > AREA_CHANGE:
        result.action = "grow"
    elif result.area_ratio < 1 / AREA_CHANGE:
        result.action = "shrink"
    elif max(abs(result.dx), abs(result.dy)) > MOVE_MIN:
        if abs(result.dx) >= abs(result.dy):
            result.action = "right" if result.dx > 0 else "left"
        else:
            result.action = "down" if result.dy > 0 else "up"
    else:
        result.action = "still"
    return result

"""Procedural bilingual video data: one coloured shape moving, growing, shrinking, changing colour or
staying still over a plain or textured background, with captions in English and Chinese.

    spec = sample_clip_spec(seed=0, index=7)           # everything random about clip 7 of dataset 0
    video = render_clip(spec, size=96)                 # (frames, H, W, 3) float32 in [0, 1]
    caption(spec, "zh", window=(0, 17))                # "红色圆形向左移动"

Everything is a pure function of (seed, index): the same numbers give the same clip on any machine
(numpy's PCG64 with a fixed seed sequence), which is what makes the small model's training
reproducible. Geometry is resolution-free (positions and sizes are fractions of the frame width), so
one spec renders at any size.

Palette and detectability: the six shape colours are fully saturated, 55-70 degrees apart in hue;
backgrounds are greys or muted tints (HSV saturation <= 0.18), so a pixel's saturation alone tells
shape from background (see ``research/detectors.py``). Shapes are drawn with a one-pixel anti-aliased
edge from signed distances, and every shape of "size" s fills an s x s box: a circle covers pi/4 of
it, a square all, an upward triangle half.
"""

from dataclasses import dataclass, field

import numpy as np

CLIP_FRAMES = 35  # two 17-frame chunks + the frame after them (see research/train_small_model.py)

# name_en, name_zh, RGB in [0, 1]
COLOURS = (
    ("red", "红色", (0.95, 0.12, 0.10)),
    ("yellow", "黄色", (0.98, 0.86, 0.08)),
    ("green", "绿色", (0.10, 0.78, 0.16)),
    ("cyan", "青色", (0.06, 0.80, 0.88)),
    ("blue", "蓝色", (0.14, 0.28, 0.98)),
    ("purple", "紫色", (0.76, 0.14, 0.90)),
)
COLOUR_NAMES = tuple(c[0] for c in COLOURS)

SHAPES = (("circle", "圆形"), ("square", "正方形"), ("triangle", "三角形"))
SHAPE_NAMES = tuple(s[0] for s in SHAPES)

MOVES = {  # action -> unit direction (x right, y down), English phrase, Chinese phrase
    "left": ((-1, 0), "moves to the left", "向左移动"),
    "right": ((1, 0), "moves to the right", "向右移动"),
    "up": ((0, -1), "moves up", "向上移动"),
    "down": ((0, 1), "moves down", "向下移动"),
}
OTHER_ACTIONS = {  # action -> English phrase, Chinese phrase ("{}" = the target colour)
    "grow": ("grows bigger", "变大"),
    "shrink": ("shrinks", "变小"),
    "recolour": ("turns {}", "变成{}"),
    "still": ("stays still", "静止不动"),
}
ACTIONS = tuple(MOVES) + tuple(OTHER_ACTIONS)
ACTION_WEIGHTS = {"left": 1.5, "right": 1.5, "up": 1.5, "down": 1.5, "grow": 1.0, "shrink": 1.0, "recolour": 1.3,
                  "still": 0.7}

BACKGROUNDS = (("plain", "纯色"), ("striped", "条纹"), ("checkered", "棋盘格"), ("gradient", "渐变"),
               ("textured", "纹理"))
BACKGROUND_NAMES = tuple(b[0] for b in BACKGROUNDS)
BACKGROUND_WEIGHTS = (0.4, 0.15, 0.15, 0.15, 0.15)

MOVE_DISTANCE = (0.35, 0.55)  # centre displacement over a whole clip, fraction of the width
MOVE_SIZE = (0.24, 0.32)  # shape size (bounding-box side) for moving / still / recolouring shapes
GROW_SIZES = ((0.14, 0.18), (0.40, 0.46))  # small and large end of a growing / shrinking shape
MARGIN = 0.03
BACKGROUND_PERIOD = (0.35, 0.6)  # stripe period / 1.25 x checker cell, fraction of the width (low frequency:
# a 16x compressing VAE with few latent channels cannot afford fine textures)
TEXTURE_FREQUENCY = (0.8, 2.0)  # cycles per width of the smooth-noise texture's sinusoids
RECOLOUR_SPAN = (3, 14)  # frames over which a colour change happens (inside the first chunk)


@dataclass(frozen=True)
class ClipSpec:
    """Everything about one clip. Positions/sizes are fractions of the width (the frame is square or wider)."""

    colour: int
    shape: int
    action: str
    colour2: int  # target colour of "recolour" (== colour otherwise)
    background: str
    bg_colours: tuple  # two RGB tuples
    bg_params: tuple  # background-kind parameters (see _background)
    start: tuple  # (x, y) centre at frame 0
    end: tuple  # (x, y) centre at the last frame
    size0: float
    size1: float
    recolour_span: tuple = RECOLOUR_SPAN
    frames: int = CLIP_FRAMES
    mention_background: tuple = field(default=(False, False))  # per language (en, zh): caption names the background

    @property
    def colour_name(self):
        return COLOUR_NAMES[self.colour]

    @property
    def shape_name(self):
        return SHAPE_NAMES[self.shape]


def _rng(seed, index, stream=0):
    return np.random.default_rng([int(seed), int(index), int(stream)])


def _muted_colour(rng, value=None):
    """An RGB background colour with HSV saturation <= 0.18."""
    v = rng.uniform(0.12, 0.9) if value is None else value
    s = rng.uniform(0.0, 0.18)
    hue = rng.uniform(0, 1)
    return tuple(float(c) for c in _hsv_to_rgb(hue, s, v))


def _hsv_to_rgb(h, s, v):
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def sample_clip_spec(seed, index, action=None, colour=None, shape=None, background=None, colour2=None):
    """The random clip number ``index`` of dataset ``seed``; keyword arguments pin attributes (tests, demos)."""
    rng = _rng(seed, index)
    actions = list(ACTION_WEIGHTS)
    weights = np.array([ACTION_WEIGHTS[a] for a in actions])
    drawn_action = actions[rng.choice(len(actions), p=weights / weights.sum())]
    drawn_colour = int(rng.integers(len(COLOURS)))
    drawn_shape = int(rng.integers(len(SHAPES)))
    drawn_colour2 = int((drawn_colour + rng.integers(1, len(COLOURS))) % len(COLOURS))
    drawn_bg = BACKGROUND_NAMES[rng.choice(len(BACKGROUNDS), p=np.array(BACKGROUND_WEIGHTS))]
    action = drawn_action if action is None else action
    colour = drawn_colour if colour is None else colour
    shape = drawn_shape if shape is None else shape
    background = drawn_bg if background is None else background
    if colour2 is None:
        colour2 = drawn_colour2 if drawn_colour2 != colour else (colour + 1) % len(COLOURS)
    if action != "recolour":
        colour2 = colour

    # background: two muted colours with some contrast, and the pattern's parameters
    v1 = rng.uniform(0.12, 0.9)
    v2 = np.clip(v1 + rng.choice([-1, 1]) * rng.uniform(0.15, 0.35), 0.08, 0.95)
    bg_colours = (_muted_colour(rng, v1), _muted_colour(rng, float(v2)))
    bg_params = (float(rng.uniform(*BACKGROUND_PERIOD)), int(rng.integers(3)), float(rng.uniform(0, 2 * np.pi)),
                 int(rng.integers(1 << 30)))

    if action in ("grow", "shrink"):
        small, large = rng.uniform(*GROW_SIZES[0]), rng.uniform(*GROW_SIZES[1])
        size0, size1 = (small, large) if action == "grow" else (large, small)
        centre = tuple(rng.uniform(large / 2 + MARGIN, 1 - large / 2 - MARGIN, size=2))
        start = end = centre
    else:
        size0 = size1 = rng.uniform(*MOVE_SIZE)
        lo, hi = size0 / 2 + MARGIN, 1 - size0 / 2 - MARGIN
        if action in MOVES:
            (dx, dy), _, _ = MOVES[action]
            distance = rng.uniform(*MOVE_DISTANCE)
            along = rng.uniform(lo + distance, hi) if (dx + dy) < 0 else rng.uniform(lo, hi - distance)
            across = rng.uniform(lo, hi)
            if dx:
                start, end = (along, across), (along + dx * distance, across)
            else:
                start, end = (across, along), (across, along + dy * distance)
        else:
            start = end = tuple(rng.uniform(lo, hi, size=2))
    mention = tuple(bool(m) for m in rng.uniform(size=2) < 0.5)
    return ClipSpec(colour=colour, shape=shape, action=action, colour2=colour2, background=background,
                    bg_colours=bg_colours, bg_params=bg_params, start=tuple(map(float, start)),
                    end=tuple(map(float, end)), size0=float(size0), size1=float(size1), mention_background=mention)


# --- rendering -------------------------------------------------------------------------------------

def _background(spec, height, width):
    """(H, W, 3) float32 static background."""
    period, orientation, phase, seed = spec.bg_params
    a, b = (np.array(c, dtype=np.float32) for c in spec.bg_colours)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = (x + 0.5) / width, (y + 0.5) / width  # fractions of the width
    kind = spec.background
    if kind == "plain":
        weight = np.zeros_like(x)
    elif kind == "striped":
        coord = (x, y, (x + y) / np.sqrt(2))[orientation]
        weight = 0.5 + 0.5 * np.tanh(4 * np.sin(2 * np.pi * coord / period + phase))
    elif kind == "checkered":
        cell = period * 0.8
        weight = ((np.floor(x / cell + phase) + np.floor(y / cell + phase)) % 2).astype(np.float32)
    elif kind == "gradient":
        direction = np.array([np.cos(phase), np.sin(phase)])
        coord = (x - 0.5) * direction[0] + (y - height / width / 2) * direction[1]
        weight = np.clip(coord / 0.8 + 0.5, 0, 1)
    elif kind == "textured":
        rng = np.random.default_rng(seed)
        field_ = np.zeros_like(x)
        for _ in range(4):
            k = rng.uniform(*TEXTURE_FREQUENCY) * 2 * np.pi
            angle = rng.uniform(0, 2 * np.pi)
            field_ += np.sin(k * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
        weight = 0.5 + 0.5 * np.tanh(field_)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return (a * (1 - weight[..., None]) + b * weight[..., None]).astype(np.float32)


def _smoothstep(t):
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def shape_track(spec, frames=None):
    """Per-frame centre x, y, size (fractions of the width) and colour blend weight, each (frames,) float."""
    frames = spec.frames if frames is None else frames
    u = np.linspace(0, 1, frames) if frames > 1 else np.zeros(1)
    cx = spec.start[0] + (spec.end[0] - spec.start[0]) * u
    cy = spec.start[1] + (spec.end[1] - spec.start[1]) * u
    size = spec.size0 + (spec.size1 - spec.size0) * u
    f = np.arange(frames, dtype=np.float64)
    first, last = spec.recolour_span
    blend = _smoothstep((f - first) / (last - first)) if spec.action == "recolour" else np.zeros(frames)
    return cx, cy, size, blend


def shape_coverage(shape, cx, cy, size, height, width):
    """Anti-aliased coverage (frames, H, W) in [0, 1]; cx, cy, size (frames,) in fractions of the width."""
    px = np.arange(width, dtype=np.float32) + 0.5
    py = np.arange(height, dtype=np.float32) + 0.5
    x = px[None, None, :] - (np.asarray(cx, np.float32) * width)[:, None, None]
    y = py[None, :, None] - (np.asarray(cy, np.float32) * width)[:, None, None]
    half = (np.asarray(size, np.float32) * width / 2)[:, None, None]
    if shape == "circle":
        dist = np.sqrt(x * x + y * y) - half
    elif shape == "square":
        dist = np.maximum(np.abs(x), np.abs(y)) - half
    elif shape == "triangle":  # apex up, base = height = size
        # edges: base y = +half; two slanted sides through the apex (0, -half) and (+-half, +half)
        norm = np.sqrt(5.0).astype(np.float32)
        right = (2 * x - y - half) / norm
        left = (-2 * x - y - half) / norm
        dist = np.maximum(np.maximum(right, left), y - half)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(0.5 - dist, 0.0, 1.0)


def render_clip(spec, size=96, height=None, frames=None):
    """The clip as (frames, H, W, 3) float32 in [0, 1]; ``size`` is the width (height defaults to it)."""
    width = size
    height = size if height is None else height
    frames = spec.frames if frames is None else frames
    cx, cy, s, blend = shape_track(spec, frames)
    coverage = shape_coverage(SHAPE_NAMES[spec.shape], cx, cy, s, height, width)[..., None]
    c1 = np.array(COLOURS[spec.colour][2], np.float32)
    c2 = np.array(COLOURS[spec.colour2][2], np.float32)
    colour = (c1[None] * (1 - blend[:, None]) + c2[None] * blend[:, None]).astype(np.float32)[:, None, None, :]
    background = _background(spec, height, width)[None]
    return (background * (1 - coverage) + colour * coverage).astype(np.float32)


# --- captions --------------------------------------------------------------------------------------

def chinese_words():
    """The Chinese words the captions are made of (colours, shapes, action and background words)."""
    words = [c[1] for c in COLOURS] + [s[1] for s in SHAPES] + [b[1] for b in BACKGROUNDS]
    words += ["向左", "向右", "向上", "向下", "移动", "变大", "变小", "变成", "静止不动", "背景上"]
    return words


def window_action(spec, window):
    """(action, colour, colour2) visible in frames [start, stop) of the clip: a colour change outside the
    window shows as a still shape of the colour it has there."""
    if spec.action != "recolour":
        return spec.action, spec.colour, spec.colour2
    start, stop = window
    first, last = spec.recolour_span
    if start <= first and stop - 1 >= last:
        return "recolour", spec.colour, spec.colour2
    if stop - 1 <= first:
        return "still", spec.colour, spec.colour
    if start >= last:
        return "still", spec.colour2, spec.colour2
    return "recolour", spec.colour, spec.colour2  # partly visible change: still a change


def describe(colour, shape, action, colour2=None, background=None, language="en"):
    """The caption of an attribute combination; ``background`` None leaves the background unmentioned."""
    colour2 = colour if colour2 is None else colour2
    if language == "en":
        c, s = COLOURS[colour][0], SHAPES[shape][0]
        phrase = MOVES[action][1] if action in MOVES else OTHER_ACTIONS[action][0].format(COLOURS[colour2][0])
        text = f"a {c} {s} {phrase}"
        if background is not None:
            text += f" on a {BACKGROUNDS[BACKGROUND_NAMES.index(background)][0]} background"
        return text
    if language == "zh":
        c, s = COLOURS[colour][1], SHAPES[shape][1]
        phrase = MOVES[action][2] if action in MOVES else OTHER_ACTIONS[action][1].format(COLOURS[colour2][1])
        text = f"{c}{s}{phrase}"
        if background is not None:
            text = f"{BACKGROUNDS[BACKGROUND_NAMES.index(background)][1]}背景上，" + text
        return text
    raise ValueError(f"language must be 'en' or 'zh', got {language!r}")


def caption(spec, language="en", window=None):
    """The caption of frames ``window`` = (start, stop) of the clip (default: all of it)."""
    window = (0, spec.frames) if window is None else window
    action, colour, colour2 = window_action(spec, window)
    mention = spec.mention_background[0 if language == "en" else 1]
    return describe(colour, spec.shape, action, colour2, spec.background if mention else None, language)


def all_captions():
    """Every caption the generator can produce, both languages (the tokenizers' training corpus)."""
    return [text for text, _ in all_caption_attributes()]


def attributes_of(colour, shape, action, colour2, background):
    """Integer labels (colour, shape, action, colour2, background+1 or 0) of a caption's attributes."""
    return (colour, shape, ACTIONS.index(action), colour2,
            0 if background is None else 1 + BACKGROUND_NAMES.index(background))


def all_caption_attributes():
    """[(text, labels)] for every caption (see :func:`attributes_of`)."""
    rows = []
    for colour in range(len(COLOURS)):
        for shape in range(len(SHAPES)):
            for action in ACTIONS:
                targets = [c for c in range(len(COLOURS)) if c != colour] if action == "recolour" else [colour]
                for colour2 in targets:
                    for background in (None,) + BACKGROUND_NAMES:
                        labels = attributes_of(colour, shape, action, colour2, background)
                        for language in ("en", "zh"):
                            rows.append((describe(colour, shape, action, colour2, background, language), labels))
    return rows

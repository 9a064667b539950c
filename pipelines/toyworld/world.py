"""The toy world: coloured shapes on coloured backgrounds, each with a caption.

Everything here is procedural and deterministic from a seed; nothing is stored on disk.

Why 32 px: the bundled UNet must train on 2 CPU cores in a couple of hours and sample
50 DDIM steps with CFG in about a second. At 32x32 one UNet step costs ~4x less than at
64x64, and five large, upright shapes in eight saturated colours stay unambiguous at that
size (the app upscales with nearest/bicubic for display).

Images are rendered with PIL at 4x the target size and box-downsampled, which gives
anti-aliased edges. Tensors returned are ``[B, 3, H, W]`` float32 in ``[-1, 1]``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
# Shapes the bundled models never saw: drawn, captioned and judged like the others, but kept out of
# SHAPES so no default training distribution (sample_scene, make_batch, all_captions) draws them;
# the fine-tuning lesson (seed 000) teaches them to a pretrained model.
NEW_SHAPES: tuple[str, ...] = ("heart",)
ALL_SHAPES: tuple[str, ...] = SHAPES + NEW_SHAPES

# Eight clearly distinct, saturated foreground colours (sRGB 0..255).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 20),
    "green": (30, 170, 50),
    "cyan": (0, 210, 230),
    "blue": (30, 70, 235),
    "purple": (140, 50, 200),
    "pink": (255, 120, 200),
}

# Four backgrounds, each far from every foreground colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "white": (245, 245, 245),
    "gray": (125, 125, 125),
    "navy": (15, 20, 75),
}

SIZES: tuple[str, ...] = ("small", "medium", "large")
# Radius of the shape's bounding circle, as a fraction of the image side.
SIZE_RADIUS: dict[str, tuple[float, float]] = {
    "small": (0.20, 0.25),
    "medium": (0.27, 0.33),
    "large": (0.35, 0.42),
}

# Where a shape's centre may fall (fractions of the side; sample_scene also keeps it inside the image).
CENTRE_RANGE: tuple[float, float] = (0.5 - 0.12, 0.5 + 0.12)

# (colour, shape) combinations never shown in training, to measure generalisation.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {("purple", "star"), ("green", "triangle"), ("orange", "cross")}
)


@dataclass(frozen=True)
class Scene:
    """One toy-world image's attributes. ``cx, cy, r`` are fractions of the image side."""

    shape: str
    color: str
    background: str
    size: str
    cx: float
    cy: float
    r: float

    def caption(self, with_size: bool = True, with_background: bool = True) -> str:
        """English caption, e.g. 'a small red circle on a navy background'."""
        size = f"{self.size} " if with_size and self.size != "medium" else ""
        text = f"a {size}{self.color} {self.shape}"
        if with_background:
            text += f" on a {self.background} background"
        return text


def all_captions(with_size: bool = False) -> list[str]:
    """Every full (shape, colour, background) caption, the label set for zero-shot tests."""
    out = []
    for shape in SHAPES:
        for color in COLORS:
            for bg in BACKGROUNDS:
                out.append(Scene(shape, color, bg, "medium", 0.5, 0.5, 0.3).caption(with_size))
    return out


def parse_caption(text: str) -> dict[str, str | None]:
    """Attributes named in a caption (None where absent). Used to label prompts."""
    words = text.lower().replace(",", " ").split()
    found: dict[str, str | None] = {"shape": None, "color": None, "background": None}
    for i, w in enumerate(words):
        if w in ALL_SHAPES or (w.endswith("s") and w[:-1] in ALL_SHAPES):
            found["shape"] = w if w in ALL_SHAPES else w[:-1]
        if w in COLORS and found["color"] is None and not _is_background(words, i):
            found["color"] = w
        if w in BACKGROUNDS and _is_background(words, i):
            found["background"] = w
    return found


def _is_background(words: list[str], i: int) -> bool:
    return i + 1 < len(words) and words[i + 1] == "background"


def sample_scene(rng: random.Random, allow_held_out: bool = False, shapes: tuple[str, ...] = SHAPES) -> Scene:
    """Draw one scene uniformly over attributes (held-out pairs excluded unless allowed); ``shapes``
    defaults to the trained ones (pass ``NEW_SHAPES`` for the fine-tuning data)."""
    while True:
        shape = rng.choice(shapes)
        color = rng.choice(list(COLORS))
        if allow_held_out or (color, shape) not in HELD_OUT:
            break
    background = rng.choice(list(BACKGROUNDS))
    size = rng.choice(SIZES)
    lo, hi = SIZE_RADIUS[size]
    r = rng.uniform(lo, hi)
    margin = r + 0.04
    lo_c, hi_c = CENTRE_RANGE
    cx = rng.uniform(max(margin, lo_c), min(1 - margin, hi_c))
    cy = rng.uniform(max(margin, lo_c), min(1 - margin, hi_c))
    return Scene(shape, color, background, size, cx, cy, r)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices (pixels) of the shape; None for the circle (drawn as an ellipse)."""
    if shape == "square":
        h = r / math.sqrt(2) * 1.15  # a square reads as about as large as the circle
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # Equilateral, pointing up, centroid at (cx, cy + r/6) so it sits visually centred.
        oy = cy + r * 0.15
        return [
            (cx + r * math.cos(math.radians(a)), oy - r * math.sin(math.radians(a)))
            for a in (90, 210, 330)
        ]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = math.radians(90 + 36 * k)
            pts.append((cx + rad * math.cos(a), cy - rad * math.sin(a)))
        return pts
    if shape == "cross":
        a, b = r * 0.95, r * 0.33  # arm half-length, arm half-width
        return [
            (cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b),
            (cx + a, cy + b), (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a),
            (cx - b, cy + b), (cx - a, cy + b), (cx - a, cy - b), (cx - b, cy - b),
        ]
    if shape == "heart":
        # The classic heart curve x = 16 sin^3 u, y = 13 cos u - 5 cos 2u - 2 cos 3u - cos 4u
        # (x in [-16, 16], y in [-17, 12]), scaled so its half-width is 0.95 r and centred vertically.
        k = 0.95 * r / 16
        pts = []
        for i in range(72):
            u = 2 * math.pi * i / 72
            x = 16 * math.sin(u) ** 3
            y = 13 * math.cos(u) - 5 * math.cos(2 * u) - 2 * math.cos(3 * u) - math.cos(4 * u)
            pts.append((cx + k * x, cy - k * (y + 2.5)))
        return pts
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; expected one of {ALL_SHAPES}")


def render(scene: Scene, size: int = 32, supersample: int = 4) -> Image.Image:
    """Draw a scene as an anti-aliased RGB PIL image of ``size x size`` pixels."""
    big = size * supersample
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    _draw_shape(img, scene.shape, scene.cx, scene.cy, scene.r, COLORS[scene.color])
    return img.resize((size, size), Image.BOX)


def shape_coverage(shape: str, cx: float, cy: float, r: float, size: int = 32, supersample: int = 4) -> np.ndarray:
    """Fraction of each pixel the shape covers, ``[size, size]`` float32 in [0, 1]: the alpha that
    :func:`render` blends the shape's colour over the background with."""
    big = size * supersample
    mask = Image.new("L", (big, big), 0)
    _draw_shape(mask, shape, cx, cy, r, 255)
    return np.asarray(mask.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def _draw_shape(img: Image.Image, shape: str, cx: float, cy: float, r: float, fill) -> None:
    """Fill the shape (cx, cy, r as fractions of the side) on ``img``, at its own resolution."""
    big = img.size[0]
    draw = ImageDraw.Draw(img)
    cx, cy, r = cx * big, cy * big, r * big
    poly = _polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def make_batch(
    n: int, seed: int, size: int = 32, allow_held_out: bool = False
) -> tuple[torch.Tensor, list[Scene]]:
    """``n`` scenes drawn from ``seed``: images ``[n, 3, size, size]`` in [-1, 1] and scenes."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng, allow_held_out) for _ in range(n)]
    return render_batch(scenes, size), scenes


def render_batch(scenes: list[Scene], size: int = 32) -> torch.Tensor:
    """Scenes -> images ``[n, 3, size, size]`` in [-1, 1]."""
    arr = np.stack([np.asarray(render(s, size)) for s in scenes])  # [n, H, W, 3] uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def training_caption(scene: Scene, rng: random.Random) -> str:
    """A caption with random omissions, so short prompts ('a red star') work too."""
    u = rng.random()
    if u < 0.55:
        return scene.caption(with_size=True, with_background=True)
    if u < 0.75:
        return scene.caption(with_size=False, with_background=True)
    if u < 0.90:
        return scene.caption(with_size=False, with_background=False)
    return scene.caption(with_size=True, with_background=False)

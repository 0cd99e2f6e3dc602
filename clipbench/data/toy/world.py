"""A procedural image world with natural-language descriptions.

Every image is drawn from a :class:`Scene` (object shape, colour, fill pattern, size, position, background,
clutter and rendering style) and rendered with numpy alone, so the same scene always yields the same pixels.
Captions for pretraining and class names for the toy datasets are built from the same vocabulary, so a tiny
CLIP pretrained on captions can name classes it never saw as labels.

Each toy dataset photographs its scenes through a camera of its own (:attr:`Scene.cast`, a per-channel colour
cast), as real datasets differ from web captions: the image tower still separates the classes, but the
class names describe colours the pictures only approximate, so zero-shot is weaker than a few-shot classifier
on the same features, and a model adapted to one camera loses some of that on another (the domain targets).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SIZE = 32  # rendered image side, pixels
_SUPERSAMPLE = 2

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 205, 40),
    "purple": (140, 60, 190),
    "orange": (240, 135, 30),
    "pink": (240, 130, 190),
    "brown": (120, 75, 35),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
PATTERNS = ("plain", "striped", "dotted", "checkered")
STYLES = ("photo", "sketch", "noisy", "textured", "pixelated")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "white": (235, 235, 235),
    "black": (25, 25, 25),
    "blue": (70, 110, 200),
    "green": (70, 150, 80),
    "yellow": (220, 200, 90),
}


@dataclass(frozen=True)
class Scene:
    """Everything that determines one rendered image."""

    shape: str
    colour: str
    pattern: str = "plain"
    background: str = "gray"
    size: float = 0.35  # object radius as a fraction of the image side
    cx: float = 0.5
    cy: float = 0.5
    angle: float = 0.0
    clutter: int = 0  # number of small distractor shapes
    style: str = "photo"
    full_frame: bool = False  # the pattern fills the whole image (texture scenes)
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gains of the dataset's camera (colour cast)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(n) + 0.5) / n
    return np.meshgrid(coords, coords, indexing="xy")


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Boolean mask of ``shape`` centred at (cx, cy) with radius ``r`` in unit coordinates (y grows downward)."""
    c, s = np.cos(angle), np.sin(angle)
    u = (c * (x - cx) + s * (y - cy)) / r
    v = (-s * (x - cx) + c * (y - cy)) / r
    rad = np.sqrt(u * u + v * v)
    if shape == "circle":
        return rad <= 1.0
    if shape == "ring":
        return (rad <= 1.0) & (rad >= 0.55)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":
        return (v >= -0.9) & (v <= 0.7) & (np.abs(u) <= (v + 0.9) / 1.6 * 0.95)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def _pattern_weight(pattern: str, x: np.ndarray, y: np.ndarray, angle: float, period: float) -> np.ndarray:
    """1.0 where the fill shows the base colour, 0.0 where it shows the contrasting colour."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * x + s * y) / period, (-s * x + c * y) / period
    if pattern == "plain":
        return np.ones_like(x)
    if pattern == "striped":
        return (np.floor(u * 2) % 2 == 0).astype(float)
    if pattern == "checkered":
        return ((np.floor(u * 2) + np.floor(v * 2)) % 2 == 0).astype(float)
    if pattern == "dotted":
        fu, fv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
        return (np.sqrt(fu * fu + fv * fv) > 0.28).astype(float)
    raise ValueError(f"unknown pattern {pattern!r}; valid: {', '.join(PATTERNS)}")


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, float) + rng.normal(0, amount, 3), 0, 255)


def _fill(scene: Scene, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    base = _jitter(COLOURS[scene.colour], rng, 18)
    other = np.full(3, 245.0) if scene.pattern != "plain" else base
    w = _pattern_weight(scene.pattern, x, y, rng.uniform(0, np.pi), rng.uniform(0.12, 0.2))[..., None]
    return w * base + (1 - w) * other


def _background(scene: Scene, n: int, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(n)
    img = np.broadcast_to(_jitter(BACKGROUNDS[scene.background], rng, 12), (n, n, 3)).copy()
    if scene.style == "textured":
        tint = rng.uniform(40, 230, 3)
        w = _pattern_weight(str(rng.choice(PATTERNS[1:])), x, y, rng.uniform(0, np.pi), rng.uniform(0.08, 0.2))
        img = w[..., None] * img + (1 - w[..., None]) * tint
    return img


def _paint_clutter(img: np.ndarray, scene: Scene, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    others = [c for c in COLOURS if c != scene.colour]
    for _ in range(scene.clutter):
        m = shape_mask(
            str(rng.choice(SHAPES)),
            x,
            y,
            rng.uniform(0.1, 0.9),
            rng.uniform(0.1, 0.9),
            rng.uniform(0.05, 0.09),
            rng.uniform(0, np.pi),
        )
        img[m] = _jitter(COLOURS[str(rng.choice(others))], rng, 15)


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Render ``scene`` to a ``SIZE x SIZE x 3`` uint8 array; ``rng`` supplies the nuisance randomness."""
    n = SIZE * _SUPERSAMPLE
    x, y = _grid(n)
    if scene.full_frame:
        img = _fill(scene, x, y, rng)
    else:
        img = _background(scene, n, rng)
        _paint_clutter(img, scene, x, y, rng)
        mask = shape_mask(scene.shape, x, y, scene.cx, scene.cy, scene.size, scene.angle)
        if scene.style == "sketch":
            img[:] = 240.0
            inner = shape_mask(scene.shape, x, y, scene.cx, scene.cy, scene.size * 0.8, scene.angle)
            mask = mask & ~inner
            img[mask] = _jitter(COLOURS[scene.colour], rng, 10)
        else:
            img[mask] = _fill(scene, x, y, rng)[mask]
    img = img.reshape(SIZE, _SUPERSAMPLE, SIZE, _SUPERSAMPLE, 3).mean(axis=(1, 3)) * np.asarray(scene.cast)
    return _finish(img, scene.style, rng)


def _finish(img: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    noise = 40.0 if style == "noisy" else 8.0
    img = img + rng.normal(0, noise, img.shape)
    if style == "pixelated":
        block = SIZE // 8
        small = img.reshape(8, block, 8, block, 3).mean(axis=(1, 3))
        img = np.repeat(np.repeat(np.round(small / 64) * 64, block, 0), block, 1)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_scene(rng: np.random.Generator, **fixed: object) -> Scene:
    """A scene with every attribute not in ``fixed`` drawn at random (the world's nuisance distribution)."""
    colour = str(rng.choice(list(COLOURS)))
    background = str(rng.choice([b for b in BACKGROUNDS if b != colour]))
    size = float(rng.uniform(0.26, 0.42))
    scene = Scene(
        shape=str(rng.choice(SHAPES)),
        colour=colour,
        pattern="plain",
        background=background,
        size=size,
        cx=float(rng.uniform(size, 1 - size)),
        cy=float(rng.uniform(size, 1 - size)),
        angle=float(rng.uniform(-0.25, 0.25)),
        clutter=int(rng.integers(0, 3)),
        style="photo",
    )
    scene = replace(scene, **fixed)
    if scene.background == scene.colour:
        scene = replace(scene, background="gray" if scene.colour != "gray" else "white")
    return scene


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A natural-language caption naming some of the scene's attributes (always the defining ones)."""
    colour, pattern, shape = scene.colour, scene.pattern, scene.shape
    if scene.full_frame:
        return f"{'a close-up of a' if rng.uniform() < 0.5 else 'a'} {colour} {pattern} texture."
    noun = f"{colour} {shape}" if scene.pattern == "plain" else f"{colour} {pattern} {shape}"
    prefix = {
        "photo": "a photo of a",
        "sketch": "a sketch of a",
        "noisy": "a noisy photo of a",
        "textured": "a busy photo of a",
        "pixelated": "a pixelated image of a",
    }[scene.style]
    extra = rng.integers(0, 4)
    if extra in (1, 3):
        return f"{prefix} {noun} on a {scene.background} background."
    if extra == 2:
        size = "large" if scene.size > 0.34 else "small"
        return f"{prefix} {size} {noun}."
    return f"{prefix} {noun}."


def pretraining_scene(rng: np.random.Generator) -> Scene:
    """Scenes for caption pretraining: mostly photos, some textures, a few stylised renderings."""
    kind = rng.uniform()
    if kind < 0.15:
        return Scene(
            shape="square",
            colour=str(rng.choice(list(COLOURS))),
            pattern=str(rng.choice(PATTERNS[1:])),
            full_frame=True,
        )
    style = str(rng.choice(STYLES, p=[0.8, 0.06, 0.05, 0.05, 0.04]))
    pattern = str(rng.choice(PATTERNS, p=[0.7, 0.1, 0.1, 0.1]))
    return random_scene(rng, style=style, pattern=pattern)

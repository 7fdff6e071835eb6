"""The embedded procedural part-segmentation domain: "critters".

Each image shows one four-legged critter (body, head, legs, tail, eye, beak) on a textured
background with distractor shapes and, sometimes, an occluder in front. Every image is a pure
function of its integer seed, at any resolution from 32 px up, and its mask is exact, so the
domain can produce any number of labelled images and measure label quality honestly.

Colour alone does not solve it: every part's colour is drawn at random per image, distractor
shapes in the background reuse the critter's colours, and the head often shares the body's colour.
Two parts are small (eye, beak: each ~1 % of the pixels) yet several pixels wide at 32 px.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("background", "body", "head", "leg", "tail", "eye", "beak")
BACKGROUND, BODY, HEAD, LEG, TAIL, EYE, BEAK = range(len(CLASS_NAMES))

# A salt keeps this domain's random streams apart from any other use of the same integer seeds.
_DOMAIN_SALT = 0x5EED_DD9A
_MIN_SIZE = 32
PROCEDURAL_POOL_SEED0 = 3_000_000  # unlabelled seeds (DDPM training pool); disjoint from the labelled splits


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(0.25, 1.0), rng.uniform(0.2, 1.0))


class _Canvas:
    """A supersampled RGB canvas with a parallel label map; shapes are painted back to front."""

    def __init__(self, size: int, supersample: int):
        n = size * supersample
        # Pixel-centre coordinates in [0, 1) image units.
        coords = (np.arange(n, dtype=np.float32) + 0.5) / n
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")
        self.rgb = np.zeros((n, n, 3), dtype=np.float32)
        self.label = np.zeros((n, n), dtype=np.uint8)

    def paint(self, inside: np.ndarray, colour: np.ndarray, label: int) -> None:
        self.rgb[inside] = colour if colour.ndim == 1 else colour[inside]
        self.label[inside] = label


class _Pose:
    """Maps image coordinates into the critter's local frame (x forward, y down, unit = image side)."""

    def __init__(self, cx: float, cy: float, scale: float, angle: float, flip: bool):
        self.cx, self.cy, self.scale = cx, cy, scale
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.flip = -1.0 if flip else 1.0

    def local(self, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
        dx = (canvas.x - self.cx) / self.scale
        dy = (canvas.y - self.cy) / self.scale
        u = self.cos * dx + self.sin * dy
        v = -self.sin * dx + self.cos * dy
        return u * self.flip, v


def _ellipse(u, v, cu, cv, a, b, angle=0.0):
    c, s = math.cos(angle), math.sin(angle)
    du, dv = u - cu, v - cv
    ru, rv = c * du + s * dv, -s * du + c * dv
    return (ru / a) ** 2 + (rv / b) ** 2 <= 1.0


def _capsule(u, v, p0, p1, radius):
    (u0, v0), (u1, v1) = p0, p1
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return (u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2 <= radius * radius


def _triangle(u, v, a, b, c):
    def side(p, q):
        return (u - q[0]) * (p[1] - q[1]) - (p[0] - q[0]) * (v - q[1])

    d1, d2, d3 = side(a, b), side(b, c), side(c, a)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(neg & pos)


def _background(canvas: _Canvas, rng: np.random.Generator, reuse: list[np.ndarray]) -> None:
    c0, c1 = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (canvas.x * math.cos(angle) + canvas.y * math.sin(angle) + 1.5) / 3.0
    canvas.rgb[:] = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    kind = rng.integers(3)
    if kind == 0:  # stripes
        freq, phase, tilt = rng.uniform(3, 9), rng.uniform(0, 2 * math.pi), rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * freq * (canvas.x * math.cos(tilt) + canvas.y * math.sin(tilt)) + phase)
        canvas.rgb += (wave[..., None] * rng.uniform(0.05, 0.2)).astype(np.float32)
    elif kind == 1:  # checkerboard
        cells = rng.integers(3, 8)
        checker = ((canvas.x * cells).astype(int) + (canvas.y * cells).astype(int)) % 2
        canvas.rgb += ((checker[..., None] - 0.5) * rng.uniform(0.1, 0.3)).astype(np.float32)
    # kind == 2: plain gradient
    for _ in range(rng.integers(1, 5)):
        # Distractors reuse the critter's own colours half of the time.
        colour = reuse[rng.integers(len(reuse))] if rng.random() < 0.5 else _random_colour(rng)
        inside = _ellipse(canvas.x, canvas.y, rng.random(), rng.random(), rng.uniform(0.03, 0.15),
                          rng.uniform(0.03, 0.15), rng.uniform(0, math.pi))
        canvas.paint(inside, colour, BACKGROUND)


def _critter(canvas: _Canvas, rng: np.random.Generator, colours: dict[str, np.ndarray]) -> None:
    pose = _Pose(cx=rng.uniform(0.3, 0.7), cy=rng.uniform(0.35, 0.65), scale=rng.uniform(0.8, 1.15),
                 angle=rng.uniform(-0.5, 0.5), flip=bool(rng.random() < 0.5))
    u, v = pose.local(canvas)

    # Tail: a thick stroke from the back of the body.
    phi = rng.uniform(-0.4, 1.3)
    root = (-0.24, -0.02)
    tip = (root[0] - 0.2 * math.cos(phi), root[1] - 0.2 * math.sin(phi))
    canvas.paint(_capsule(u, v, root, tip, 0.035), colours["tail"], TAIL)

    # Legs: four strokes under the body, each swung by its own angle.
    for x0 in (-0.17, -0.07, 0.07, 0.17):
        swing = rng.uniform(-0.45, 0.45)
        foot = (x0 + 0.22 * math.sin(swing), 0.1 + 0.22 * math.cos(swing))
        canvas.paint(_capsule(u, v, (x0, 0.06), foot, 0.035), colours["leg"], LEG)

    # Body with a per-image texture: plain shading, stripes or spots.
    body = _ellipse(u, v, 0.0, 0.0, 0.27, 0.16)
    texture = rng.integers(3)
    base, accent = colours["body"], colours["accent"]
    if texture == 0:
        shade = np.clip(0.75 + 0.25 * (-v / 0.16), 0.4, 1.2)[..., None]
        rgb = base * shade
    elif texture == 1:
        stripes = (np.sin(u * rng.uniform(25, 45)) > 0)[..., None]
        rgb = np.where(stripes, base, accent)
    else:
        spots = (np.sin(u * 40 + 1.3) * np.sin(v * 40) > 0.4)[..., None]
        rgb = np.where(spots, accent, base)
    canvas.paint(body, np.broadcast_to(rgb, canvas.rgb.shape).astype(np.float32), BODY)

    head_u, head_v = 0.27, -0.13
    canvas.paint(_ellipse(u, v, head_u, head_v, 0.12, 0.12), colours["head"], HEAD)
    beak = _triangle(u, v, (head_u + 0.09, head_v - 0.06), (head_u + 0.09, head_v + 0.06),
                     (head_u + 0.27, head_v + rng.uniform(-0.03, 0.05)))
    canvas.paint(beak, colours["beak"], BEAK)
    canvas.paint(_ellipse(u, v, head_u + 0.035, head_v - 0.035, 0.06, 0.06), colours["eye"], EYE)


def _occluder(canvas: _Canvas, rng: np.random.Generator) -> None:
    colour = _random_colour(rng)
    if rng.random() < 0.5:  # a post or a branch crossing the scene
        x0, x1 = rng.uniform(0.1, 0.9, size=2)
        inside = _capsule(canvas.x, canvas.y, (x0, -0.1), (x1, 1.1), rng.uniform(0.02, 0.05))
    else:  # a bush at the bottom edge
        inside = _ellipse(canvas.x, canvas.y, rng.uniform(0.1, 0.9), 1.0, rng.uniform(0.1, 0.25),
                          rng.uniform(0.1, 0.2))
    canvas.paint(inside, colour, BACKGROUND)


def render(seed: int, size: int = 32, supersample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Render critter `seed` at `size` px: an (H, W, 3) uint8 image and an (H, W) uint8 mask."""
    if size < _MIN_SIZE:
        raise ValueError(f"procedural images need size >= {_MIN_SIZE} px, got {size}")
    rng = np.random.default_rng([_DOMAIN_SALT, int(seed)])
    body = _random_colour(rng)
    colours = {
        "body": body,
        "accent": _random_colour(rng),
        "head": body * rng.uniform(0.8, 1.1) if rng.random() < 0.5 else _random_colour(rng),
        "leg": _random_colour(rng),
        "tail": body if rng.random() < 0.3 else _random_colour(rng),
        "eye": [_hsv(0, 0, 0.05), _hsv(0, 0, 0.95), _hsv(0.15, 0.9, 0.95), _hsv(0.6, 0.8, 0.8)][rng.integers(4)],
        "beak": _hsv(rng.uniform(0.02, 0.17), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)),
    }
    canvas = _Canvas(size, supersample)
    _background(canvas, rng, [colours["body"], colours["head"], colours["leg"]])
    _critter(canvas, rng, colours)
    if rng.random() < 0.3:
        _occluder(canvas, rng)

    s = supersample
    rgb = canvas.rgb.reshape(size, s, size, s, 3).mean(axis=(1, 3))
    rgb += rng.normal(0.0, 0.015, size=rgb.shape).astype(np.float32)
    image = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    # Mask = the most frequent label among each pixel's sub-samples (ties go to the lower id).
    blocks = canvas.label.reshape(size, s, size, s).transpose(0, 2, 1, 3).reshape(size, size, s * s)
    counts = np.stack([(blocks == k).sum(-1) for k in range(len(CLASS_NAMES))], axis=-1)
    mask = counts.argmax(-1).astype(np.uint8)
    return image, mask


def render_batch(seeds, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Render several seeds: (N, H, W, 3) uint8 images and (N, H, W) uint8 masks."""
    pairs = [render(int(s), size) for s in seeds]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

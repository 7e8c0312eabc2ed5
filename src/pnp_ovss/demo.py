"""The embedded demo set: synthetic landscape scenes whose masks are exact by construction.

Each scene is painted layer by layer (sky, mountains, water or sand, grass, trees) with noise textures;
the label of every pixel is the layer painted last, so the ground truth is exact. Generated
deterministically (fixed seeds); ``python -m pnp_ovss.demo OUT`` rewrites the shipped files, and a test
checks they are reproduced bit for bit. Public domain (CC0), made for this project.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .io import write_label_png

CLASSES = ("sky", "mountain", "tree", "grass", "water", "sand")
ID = {name: i + 1 for i, name in enumerate(CLASSES)}
COLOURS = {
    "sky": (110, 165, 230),
    "mountain": (120, 110, 105),
    "tree": (30, 95, 40),
    "grass": (85, 160, 60),
    "water": (40, 90, 160),
    "sand": (215, 195, 145),
}
SCENES = (
    ("lake", 1, ("mountain", "water", "grass", "tree")),
    ("beach", 2, ("water", "sand")),
    ("meadow", 3, ("mountain", "grass", "tree")),
    ("coast", 4, ("mountain", "water", "sand")),
    ("forest", 5, ("grass", "tree")),
    ("valley", 6, ("mountain", "grass", "water")),
)
WIDTH, HEIGHT = 320, 240


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    gh, gw = h // scale + 2, w // scale + 2
    grid = rng.random((gh, gw))
    ys = np.linspace(0, gh - 2, h)
    xs = np.linspace(0, gw - 2, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def _ridge(rng: np.random.Generator, w: int, base: float, amp: float) -> np.ndarray:
    x = np.arange(w)
    y = np.full(w, base, dtype=float)
    for k in range(1, 5):
        y += amp / k * np.sin(2 * np.pi * k * x / w * rng.uniform(0.5, 1.5) + rng.uniform(0, 6.3))
    return y


def render_scene(seed: int, layers: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H, W, 3], labels uint8 [H, W]) of one scene."""
    rng = np.random.default_rng(seed)
    h, w = HEIGHT, WIDTH
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.full((h, w), ID["sky"], dtype=np.uint8)
    horizon = int(h * rng.uniform(0.38, 0.5))
    if "mountain" in layers:
        ridge = _ridge(rng, w, horizon - h * 0.18, h * 0.08)
        labels[(yy >= ridge[None, :]) & (yy < horizon + 4)] = ID["mountain"]
    ground = [name for name in ("water", "sand", "grass") if name in layers]
    top = horizon
    bands = np.linspace(horizon, h, len(ground) + 1)
    for i, name in enumerate(ground):
        edge = _ridge(rng, w, bands[i], 6.0) if i else np.full(w, float(top))
        labels[yy >= edge[None, :]] = ID[name]
    if "tree" in layers:
        for _ in range(int(rng.integers(3, 7))):
            cx = rng.uniform(0.05, 0.95) * w
            base = rng.uniform(horizon + 10, h - 5)
            height = rng.uniform(40, 90)
            half = height * 0.3
            inside = (yy <= base) & (yy >= base - height) & (np.abs(xx - cx) <= half * (yy - (base - height)) / height)
            labels[inside] = ID["tree"]
    image = np.zeros((h, w, 3), dtype=float)
    texture = _smooth_noise(rng, h, w, 6) * 0.6 + _smooth_noise(rng, h, w, 2) * 0.4
    for name, colour in COLOURS.items():
        m = labels == ID[name]
        if not m.any():
            continue
        shade = 0.75 + 0.5 * texture[m]
        if name == "sky":
            shade = 0.85 + 0.3 * (1 - yy[m] / h)
        image[m] = np.clip(np.outer(shade, colour), 0, 255)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_demo(out: Path) -> None:
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES))
    for name, seed, layers in SCENES:
        image, labels = render_scene(seed, layers)
        Image.fromarray(image).save(out / "images" / f"{name}.png", optimize=True)
        write_label_png(out / "annotations" / f"{name}.png", labels)


if __name__ == "__main__":
    write_demo(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data" / "demo")

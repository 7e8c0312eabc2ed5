"""Fabricated inputs the stage tests share: one fake dataset, images, GradCAM entries, class lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pnp_ovss.datasets.base import Dataset
from pnp_ovss.errors import DatasetError
from pnp_ovss.store import ImageMaps
from pnp_ovss.vocab import Vocabulary

NAMES = ("cat", "sofa", "lamp", "potted plant")

#: class-name lists with different lengths and word-piece structure in the tiny vocabulary
CLASS_LISTS = [
    ["cat"],
    ["pottedplant", "dog", "tvmonitor"],
    ["person", "sofa"],
    ["dog", "pottedplant"],
    ["bus", "car", "bicycle", "motorbike", "train"],
    ["diningtable"],
]


class FakeDataset(Dataset):
    """Images ``<root>/images/<id>.png``, annotations ``<root>/ann/<id>.png`` (dataset ids, 0 = background).

    ``ids``: the images (default: every PNG under ``images/``); ``unnormalised_input``: fed as the released
    code feeds ADE20K (§3)."""

    name = "fake"

    def __init__(self, root: Path, ids: list[str] | None = None, name: str = "fake", background_rule: str = "always",
                 with_gt: bool = True, unnormalised_input: bool = False):
        super().__init__(root, Vocabulary.from_names(list(NAMES)))
        self.ids = None if ids is None else list(ids)
        self.name = name
        self.background_rule = background_rule
        self.with_gt = with_gt
        self.unnormalised_input = unnormalised_input

    def image_ids(self) -> list[str]:
        if self.ids is not None:
            return list(self.ids)
        return sorted(p.stem for p in (self.root / "images").glob("*.png"))

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{image_id}.png"

    @property
    def has_ground_truth(self) -> bool:
        return self.with_gt

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "ann" / f"{image_id}.png"

    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        if not self.with_gt:
            raise DatasetError("no annotations")
        return self._read_annotation(image_id)


def write_images(root: Path, ids: list[str], seed: int = 0) -> None:
    """Random RGB images of varied sizes (smooth blobs, so resizing matters) as ``<root>/<id>.png``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for n, image_id in enumerate(ids):
        h, w = 120 + 17 * (n % 5), 150 + 23 * (n % 3)
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        im.save(root / f"{image_id}.png")


def write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def quadrant_image(h: int, w: int) -> np.ndarray:
    """Left half reddish, right half bluish, a green square in the lower right."""
    im = np.zeros((h, w, 3), np.uint8)
    im[:, : w // 2] = (180, 60, 50)
    im[:, w // 2 :] = (40, 70, 190)
    im[h // 2 :, 3 * w // 4 :] = (50, 180, 60)
    return im


def quadrant_maps(p: int = 21, d: int = 4) -> np.ndarray:
    """[3, D, P, P]: class 0 on the left half, class 1 on the right, class 2 in the lower-right quarter.

    Two empty grid columns in the middle leave pixels that are exactly 0 after upsampling, so the
    background channel is not constant (with one empty column it can be, and faithful mode then
    turns the whole image into background, ALGORITHM.md §6.5)."""
    m = np.zeros((3, d, p, p), np.float32)
    m[0, :, :, : p // 2] = 1.0
    m[1, :, :, p // 2 + 2 :] = 1.0
    m[2, :, p // 2 + 1 :, 3 * p // 4 + 1 :] = 3.0
    m += 0.01 * np.random.default_rng(0).random(m.shape).astype(np.float32)
    return m


def write_fixture(root: Path, images: dict, store_maps: dict, skipped: tuple[str, ...] = ()) -> Path:
    """Write images {id: rgb}, GradCAM entries {id: (maps, class_ids, orig_size)} (key = the image id) and
    GradCAM skip records for ``skipped``; returns the GradCAM stage folder."""
    from pnp_ovss.entries import write_gradcam_entry, write_skip

    for image_id, rgb in images.items():
        write_rgb(root / "images" / f"{image_id}.png", rgb)
    stage_dir = root / "gradcam"
    for image_id, (maps, ids, size) in store_maps.items():
        attrs = {"class_ids": list(ids), "class_names": [NAMES[i - 1] for i in ids], "orig_size": list(size)}
        write_gradcam_entry(stage_dir, image_id, ImageMaps(image_id, maps, np.zeros((maps.shape[1], 10), np.int32), attrs))
    for image_id in skipped:
        write_skip(stage_dir, image_id, image_id, "gradcam", "unreadable image (test)")
    return stage_dir

"""Shared helpers of the GradCAM tests: the tiny random BLIP (written once per module) and a fake dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from pnp_ovss.backends.blip import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny_blip") / "model")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from pnp_ovss.backends.blip import load_blip

    return load_blip(str(tiny_dir), image_size=336, device="cpu")


class FakeDataset:
    """The part of the Dataset interface the GradCAM stage uses."""

    def __init__(self, root: Path, ids: list[str], name: str = "fake", unnormalised_input: bool = False):
        self.root = Path(root)
        self.ids = list(ids)
        self.name = name
        self.unnormalised_input = unnormalised_input

    def image_ids(self):
        return list(self.ids)

    def image_path(self, image_id: str) -> Path:
        return self.root / f"{image_id}.png"

    def image_size(self, image_id: str):
        with Image.open(self.image_path(image_id)) as im:
            w, h = im.size
        return h, w

    working_size = image_size

    def read_image(self, image_id: str):
        from pnp_ovss.io import read_image

        return read_image(self.image_path(image_id))


def write_images(root: Path, ids: list[str], seed: int = 0) -> None:
    """Random RGB images of varied sizes (smooth blobs, so resizing matters)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for n, image_id in enumerate(ids):
        h, w = 120 + 17 * (n % 5), 150 + 23 * (n % 3)
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        im.save(root / f"{image_id}.png")


#: class-name lists with different lengths and word-piece structure in the tiny vocabulary
CLASS_LISTS = [
    ["cat"],
    ["pottedplant", "dog", "tvmonitor"],
    ["person", "sofa"],
    ["dog", "pottedplant"],
    ["bus", "car", "bicycle", "motorbike", "train"],
    ["diningtable"],
]

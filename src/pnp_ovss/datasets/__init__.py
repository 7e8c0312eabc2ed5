"""Dataset adapters (no Snakemake, no mmsegmentation)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..vocab import vocabulary_from_spec
from .base import Dataset
from .benchmarks import ADE20K, VOC, COCOObject, COCOStuff, PascalContext
from .folder import Demo, Folder

BENCHMARK_CLASSES = {"voc": VOC, "psc": PascalContext, "ade20k": ADE20K, "coco_stuff": COCOStuff}


def get_dataset(cfg: dict) -> Dataset:
    """The dataset adapter of a (normalised) config."""
    name = cfg["dataset"]
    root = Path(cfg.get("data_root") or "data")
    variant = cfg.get("mmseg_variant")
    if name == "demo":
        return Demo()
    if name == "folder":
        if not cfg.get("images"):
            raise ConfigError("dataset=folder needs 'images' (a directory of images)")
        return Folder(Path(cfg["images"]), vocabulary_from_spec(cfg.get("classes")), cfg.get("annotations"))
    if name == "coco_object":
        return COCOObject(root, variant, protocol=cfg.get("protocol", "pnp"))
    if name in BENCHMARK_CLASSES:
        return BENCHMARK_CLASSES[name](root, variant)
    raise ConfigError(f"unknown dataset {name!r}")


__all__ = ["Dataset", "get_dataset", "VOC", "PascalContext", "ADE20K", "COCOObject", "COCOStuff", "Folder", "Demo"]

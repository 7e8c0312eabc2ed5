"""Dataset adapters (no Snakemake, no mmsegmentation); which adapter serves a dataset is in its descriptor
(:mod:`pnp_ovss.descriptors`)."""

from __future__ import annotations

from ..descriptors import DESCRIPTORS
from ..errors import ConfigError
from ..io import ImageReading
from .base import Dataset
from .benchmarks import ADE20K, VOC, COCOObject, COCOStuff, Cityscapes, PascalContext
from .folder import Demo, Folder


def get_dataset(cfg: dict) -> Dataset:
    """The dataset adapter of a (normalised) config."""
    name = cfg["dataset"]
    if name not in DESCRIPTORS:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(DESCRIPTORS)})")
    dataset = DESCRIPTORS[name].adapter_class().from_config(cfg)
    dataset.reading = reading_of(cfg, dataset)
    return dataset


def reading_of(cfg: dict, dataset: Dataset) -> ImageReading:
    """The config's ``reading`` section for this dataset (``exif_orientation: null`` = the dataset's default)."""
    section = cfg.get("reading") or {}
    exif = section.get("exif_orientation")
    return ImageReading(
        exif_orientation=dataset.exif_by_default if exif is None else bool(exif),
        max_pixels=int(section.get("max_pixels") or 0),
        oversize=str(section.get("oversize") or "refuse"),
    )


__all__ = ["Dataset", "get_dataset", "VOC", "PascalContext", "ADE20K", "COCOObject", "COCOStuff", "Cityscapes", "Folder", "Demo"]

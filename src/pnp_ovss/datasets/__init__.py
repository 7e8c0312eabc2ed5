"""Dataset adapters (no Snakemake, no mmsegmentation); which adapter serves a dataset is in its descriptor
(:mod:`pnp_ovss.descriptors`)."""

from __future__ import annotations

from ..descriptors import DESCRIPTORS
from ..errors import ConfigError
from .base import Dataset
from .benchmarks import ADE20K, VOC, COCOObject, COCOStuff, PascalContext
from .folder import Demo, Folder


def get_dataset(cfg: dict) -> Dataset:
    """The dataset adapter of a (normalised) config."""
    name = cfg["dataset"]
    if name not in DESCRIPTORS:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(DESCRIPTORS)})")
    return DESCRIPTORS[name].adapter_class().from_config(cfg)


__all__ = ["Dataset", "get_dataset", "VOC", "PascalContext", "ADE20K", "COCOObject", "COCOStuff", "Folder", "Demo"]

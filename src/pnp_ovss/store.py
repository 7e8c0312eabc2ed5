"""Zarr stores of GradCAM maps (docs/ARCHITECTURE.md "Zarr GradCAM store").

One group per image, written by exactly one process; the attribute ``complete`` is written last, so a
group without it is unfinished and will be recomputed. Stores are never opened with mode "w" by a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr


@dataclass
class ImageMaps:
    """The stored GradCAM result of one image."""

    image_id: str
    maps: np.ndarray  # float32 [K, D, P, P]: per class, per drop iteration, G'_d
    dropped: np.ndarray  # int32 [D, drop_patches]: patches chosen at iteration d
    attrs: dict

    @property
    def class_ids(self) -> list[int]:
        return list(self.attrs["class_ids"])

    @property
    def orig_size(self) -> tuple[int, int]:
        h, w = self.attrs["orig_size"]
        return int(h), int(w)


def open_store(path: str | Path, create: bool = False) -> zarr.Group:
    """Open (mode "a" when ``create``, else "r") a GradCAM store."""
    path = Path(path)
    if not create and not path.exists():
        raise FileNotFoundError(f"{path}: GradCAM store not found")
    return zarr.open_group(str(path), mode="a" if create else "r")


def is_complete(group: zarr.Group, image_id: str) -> bool:
    if image_id not in group:
        return False
    return bool(group[image_id].attrs.get("complete", False))


def completed_ids(path: str | Path) -> set[str]:
    path = Path(path)
    if not path.exists():
        return set()
    g = open_store(path)
    return {name for name in g.group_keys() if bool(g[name].attrs.get("complete", False))}


def write_image_maps(group: zarr.Group, item: ImageMaps, complete: bool = True) -> None:
    """Write one image's group; overwrites an unfinished group; marks it complete last (unless ``complete``
    is false)."""
    if item.image_id in group:
        del group[item.image_id]
    sub = group.create_group(item.image_id)
    maps = np.ascontiguousarray(item.maps, dtype=np.float32)
    dropped = np.ascontiguousarray(item.dropped, dtype=np.int32)
    sub.create_array("maps", shape=maps.shape, dtype="float32", chunks=maps.shape)[...] = maps
    sub.create_array("dropped", shape=dropped.shape, dtype="int32", chunks=dropped.shape)[...] = dropped
    attrs = dict(item.attrs)
    attrs.pop("complete", None)
    sub.attrs.update(attrs)
    if complete:
        sub.attrs["complete"] = True


def read_image_maps(path_or_group, image_id: str) -> ImageMaps:
    group = open_store(path_or_group) if isinstance(path_or_group, (str, Path)) else path_or_group
    if not is_complete(group, image_id):
        raise KeyError(f"{image_id}: no complete GradCAM maps in the store")
    sub = group[image_id]
    return ImageMaps(
        image_id=image_id,
        maps=np.asarray(sub["maps"][...]),
        dropped=np.asarray(sub["dropped"][...]),
        attrs=dict(sub.attrs),
    )

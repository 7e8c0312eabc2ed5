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
    if complete:
        attrs["complete"] = True
    sub.update_attributes(attrs)  # one metadata write, after the arrays (attrs.update writes once per key)


def write_store_folder(path: str | Path, item: ImageMaps) -> None:
    """A new store at ``path`` (a folder that does not exist yet) holding one image's group, complete: the same
    files, byte for byte, as :func:`write_image_maps` on a store opened at ``path`` (tests compare them), a
    few times faster — the GradCAM job's writer must keep up with a GPU. The arrays' metadata is Zarr's own,
    made once per shape; the chunks are encoded with the arrays' codecs (little-endian bytes, zstd level 0);
    an array Zarr would store without a chunk (empty, all fill value) or with a NaN goes through Zarr itself."""
    maps = np.ascontiguousarray(item.maps, dtype=np.float32)
    dropped = np.ascontiguousarray(item.dropped, dtype=np.int32)
    if not all(_plain_chunk(a) for a in (maps, dropped)):
        files = _zarr_files(item)
    else:
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.group import GroupMetadata

        attrs = {k: v for k, v in item.attrs.items() if k != "complete"}
        group = GroupMetadata(attributes={**attrs, "complete": True}).to_buffer_dict(default_buffer_prototype())
        root, meta = _template(maps.shape, dropped.shape)
        files = {"zarr.json": root, f"{item.image_id}/zarr.json": group["zarr.json"].to_bytes()}
        for name, array in (("maps", maps), ("dropped", dropped)):
            files[f"{item.image_id}/{name}/zarr.json"] = meta[name]
            files[f"{item.image_id}/{name}/c/" + "/".join("0" * array.ndim)] = _encode_chunk(array)
    folder = Path(path)
    for key, data in sorted(files.items()):
        target = folder / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _plain_chunk(array: np.ndarray) -> bool:
    """Whether Zarr writes the array's one chunk as it is: not empty, not all zeros (the fill value), no NaN."""
    return array.size > 0 and bool(array.any()) and not (array.dtype.kind == "f" and bool(np.isnan(array).any()))


def _encode_chunk(array: np.ndarray) -> bytes:
    from numcodecs import Zstd

    return bytes(Zstd(level=0, checksum=False).encode(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()))


def _zarr_files(item: ImageMaps) -> dict[str, bytes]:
    """The files of a one-image store as Zarr writes them (:func:`write_image_maps`), built in memory."""
    from zarr.storage import MemoryStore

    buffers: dict = {}
    write_image_maps(zarr.open_group(MemoryStore(buffers), mode="w"), item, complete=True)
    return {key: buffer.to_bytes() for key, buffer in buffers.items()}


_TEMPLATES: dict[tuple, tuple[bytes, dict[str, bytes]]] = {}


def _template(maps_shape: tuple, dropped_shape: tuple) -> tuple[bytes, dict[str, bytes]]:
    """Zarr's root and array metadata files for these shapes (made once, by Zarr, in memory)."""
    key = (tuple(maps_shape), tuple(dropped_shape))
    if key not in _TEMPLATES:
        ones = ImageMaps("t", np.ones(maps_shape, np.float32), np.ones(dropped_shape, np.int32), {})
        files = _zarr_files(ones)
        _TEMPLATES[key] = (files["zarr.json"], {n: files[f"t/{n}/zarr.json"] for n in ("maps", "dropped")})
    return _TEMPLATES[key]


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

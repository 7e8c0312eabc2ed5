"""The GradCAM job's store writer (store.write_store_folder) writes exactly the files Zarr writes."""

from pathlib import Path

import numpy as np
import pytest

from pnp_ovss.store import ImageMaps, open_store, read_image_maps, write_image_maps, write_store_folder


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


RNG = np.random.default_rng(0)
CASES = {
    "random": (RNG.random((3, 4, 21, 21), dtype=np.float32), RNG.integers(0, 441, (4, 10)).astype(np.int32)),
    "one class": (RNG.random((1, 2, 24, 24), dtype=np.float32) - 0.5, RNG.integers(0, 576, (2, 10)).astype(np.int32)),
    "all zeros": (np.zeros((2, 4, 21, 21), np.float32), np.zeros((4, 10), np.int32)),  # Zarr writes no chunk
    "no class": (np.zeros((0, 4, 21, 21), np.float32), np.zeros((0, 10), np.int32)),
    "a NaN": (np.where(np.eye(21, dtype=bool), np.nan, 1).astype(np.float32)[None, None], np.ones((1, 10), np.int32)),
    "negative zeros": (-np.zeros((1, 2, 3, 3), np.float32) + np.eye(3, dtype=np.float32), np.ones((2, 10), np.int32)),
    "float64 in": (RNG.random((2, 1, 5, 5)), RNG.integers(0, 25, (1, 10))),  # cast as write_image_maps casts
}
ATTRS = {"class_ids": [1, 7], "class_names": ["sky", "circuit board"], "caption": "a photo of sky, circuitboard",
         "orig_size": [375, 500], "params": {"threshold": 0.15, "layer": None, "list": [1.5, "é"]}, "complete": False}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_fast_writer_writes_zarrs_own_files(tmp_path, case):
    maps, dropped = CASES[case]
    item = ImageMaps("img_0001", maps, dropped, ATTRS)
    write_store_folder(tmp_path / "fast.zarr", item)
    write_image_maps(open_store(tmp_path / "zarr.zarr", create=True), item)
    assert files(tmp_path / "fast.zarr") == files(tmp_path / "zarr.zarr")
    back = read_image_maps(tmp_path / "fast.zarr", "img_0001")
    np.testing.assert_array_equal(back.maps, np.asarray(maps, np.float32))
    np.testing.assert_array_equal(back.dropped, np.asarray(dropped, np.int32))
    assert back.attrs == {**ATTRS, "complete": True}

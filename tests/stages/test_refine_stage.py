"""The refine stage job: GradCAM entries + images -> palette PNG entries, skip records; the masks by image name
(``write_masks``: ``<id>.png`` and skipped.csv)."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
from PIL import Image

from support.fakes import FakeDataset, quadrant_image, quadrant_maps, write_fixture
from pnp_ovss.entries import entry_path, write_sealed_bytes
from pnp_ovss.errors import DatasetError
from pnp_ovss.io import default_palette, label_png_bytes
from pnp_ovss.refine import RELEASED_PARAMS, refine_image
from pnp_ovss.stages.job import ShardWork
from pnp_ovss.io import skipped_csv_text
from pnp_ovss.stages.refine import run_refine_job
from pnp_ovss.stages.views import write_masks

H, W = 60, 80


def read_skipped(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def refine(dataset, ids, params, gradcam_dir, out, log=None, **kw):
    """The refine job into ``out`` (keys = image ids), then its masks by image name in ``out/view``; returns
    the skipped rows."""
    keys = {i: i for i in ids}
    run_refine_job(dataset, ids, params, ShardWork(keys, out, out / "jobs" / "job.json", keys, gradcam_dir, log=log), **kw)
    return write_masks(ids, keys, out, out / "view")


@pytest.fixture
def shard(tmp_path):
    images = {"good": quadrant_image(H, W), "wrong_size": quadrant_image(H, W + 4), "not_in_store": quadrant_image(H, W)}
    maps = quadrant_maps()
    store = write_fixture(
        tmp_path,
        images,
        {"good": (maps, [1, 2, 3], (H, W)), "wrong_size": (maps, [1, 2, 3], (H, W))},
        skipped=("not_in_store",),
    )
    return FakeDataset(tmp_path), store, tmp_path


def test_writes_a_palette_png_in_dataset_ids_equal_to_refine_image(shard):
    dataset, store, root = shard
    out = root / "masks"
    skipped = refine(dataset, ["good"], dict(RELEASED_PARAMS), store, out)
    assert skipped == []
    with Image.open(out / "view" / "good.png") as im:
        assert im.mode == "P" and im.size == (W, H)
        labels = np.asarray(im)
        palette = np.asarray(im.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    assert np.array_equal(palette, default_palette())
    expected = refine_image(quadrant_maps(), quadrant_image(H, W), [1, 2, 3], RELEASED_PARAMS, "always")
    assert np.array_equal(labels, expected)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and len(np.unique(labels)) >= 2
    assert (out / "view" / "good.png").read_bytes() == entry_path(out, "refine", "good").read_bytes()
    assert read_skipped(out / "view" / "skipped.csv") == []
    assert (out / "view" / "skipped.csv").read_text() == "image_id,stage,reason\n"


def test_skip_lists_missing_maps_and_size_mismatch_and_goes_on(shard):
    dataset, store, root = shard
    out = root / "masks"
    skipped = refine(dataset, ["wrong_size", "good", "not_in_store"], dict(RELEASED_PARAMS), store, out,
                     on_error="skip")
    rows = read_skipped(out / "view" / "skipped.csv")
    assert rows == skipped
    by_id = {r["image_id"]: r for r in rows}
    assert set(by_id) == {"wrong_size", "not_in_store"}
    assert by_id["not_in_store"]["stage"] == "gradcam"
    assert by_id["wrong_size"]["stage"] == "refine"
    assert "wrong_size.png" in by_id["wrong_size"]["reason"] and "84x60" in by_id["wrong_size"]["reason"]
    assert (out / "view" / "good.png").is_file() and not (out / "view" / "wrong_size.png").exists()


def test_fail_stops_with_an_error_naming_the_image_file(shard):
    dataset, store, root = shard
    with pytest.raises(DatasetError, match=r"wrong_size\.png: image is 84x60 .* recorded for 80x60"):
        refine(dataset, ["wrong_size"], dict(RELEASED_PARAMS), store, root / "masks")


def test_an_image_skipped_upstream_stops_a_failing_job_naming_the_stage(shard):
    """Maps skipped upstream (gradcam on_error=skip) are listed with ``on_error: skip``; with ``fail`` the job
    stops naming the image and the stage that skipped it; maps neither there nor skipped: run gradcam first."""
    dataset, store, root = shard
    with pytest.raises(DatasetError, match="image not_in_store: skipped by the gradcam stage"):
        refine(dataset, ["not_in_store"], dict(RELEASED_PARAMS), store, root / "masks")
    (store / "images" / "not_in_store.skipped.json").unlink()
    with pytest.raises(DatasetError, match="image not_in_store: no GradCAM maps at .*run the gradcam stage first"):
        refine(dataset, ["not_in_store"], dict(RELEASED_PARAMS), store, root / "masks", on_error="skip")


def test_unreadable_crf_image_is_a_clear_error(shard):
    dataset, store, root = shard
    (root / "images" / "good.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="good.png: unreadable"):
        refine(dataset, ["good"], dict(RELEASED_PARAMS), store, root / "masks")


def test_the_job_logger_gets_the_summary(shard, caplog):
    dataset, store, root = shard
    caplog.set_level(logging.INFO)
    refine(dataset, ["good", "not_in_store"], dict(RELEASED_PARAMS), store, root / "masks",
           log=logging.getLogger("test.refine"), on_error="skip")
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "test.refine")
    assert "refined 1 images" in text and "skipped not_in_store" in text
    assert "refine : 1 images computed, 0 reused, 1 skipped" in text


def test_no_class_image_is_all_background(tmp_path):
    store = write_fixture(tmp_path, {"empty": quadrant_image(H, W)},
                          {"empty": (np.zeros((0, 4, 21, 21), np.float32), [], (H, W))})
    refine(FakeDataset(tmp_path), ["empty"], dict(RELEASED_PARAMS), store, tmp_path / "m")
    with Image.open(tmp_path / "m" / "view" / "empty.png") as im:
        assert np.all(np.asarray(im) == 0)


def test_incomplete_params_are_rejected_before_any_work(shard):
    dataset, store, root = shard
    with pytest.raises(ValueError, match="lack"):
        refine(dataset, ["good"], {"postprocess": "crf"}, store, root / "masks")


def test_skipped_csv_quotes_reasons_with_commas():
    text = skipped_csv_text([{"image_id": "a", "stage": "refine", "reason": "bad, very bad"}])
    assert text == 'image_id,stage,reason\na,refine,"bad, very bad"\n'


def test_a_label_map_already_there_is_reused_not_recomputed(shard):
    """A killed refine job leaves its finished maps in the stage folder; the rerun keeps them as they are."""
    dataset, store, root = shard
    out = root / "masks"
    sentinel = np.full((H, W), 7, np.uint8)  # a map "finished by the earlier run": must be kept as is
    write_sealed_bytes(entry_path(out, "refine", "good"), label_png_bytes(sentinel))
    refine(dataset, ["good"], dict(RELEASED_PARAMS), store, out)
    assert np.array_equal(np.asarray(Image.open(out / "view" / "good.png")), sentinel)
    assert (out / "view" / "skipped.csv").is_file()

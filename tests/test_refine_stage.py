"""The refine stage driver: store + images → palette PNGs and skipped.csv."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
from PIL import Image

from _refine_fakes import FakeDataset, quadrant_image, quadrant_maps, write_fixture
from pnp_ovss.errors import DatasetError
from pnp_ovss.io import default_palette, write_label_png
from pnp_ovss.refine import RELEASED_PARAMS, refine_image
from pnp_ovss.stages.refine import run_refine_shard, skipped_csv_text

H, W = 60, 80


def read_skipped(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def shard(tmp_path):
    images = {"good": quadrant_image(H, W), "wrong_size": quadrant_image(H, W + 4), "not_in_store": quadrant_image(H, W)}
    maps = quadrant_maps()
    store = write_fixture(
        tmp_path,
        images,
        {"good": (maps, [1, 2, 3], (H, W)), "wrong_size": (maps, [1, 2, 3], (H, W))},
    )
    return FakeDataset(tmp_path), store, tmp_path


def test_writes_a_palette_png_in_dataset_ids_equal_to_refine_image(shard):
    dataset, store, root = shard
    out = root / "masks" / "shard-0000"
    skipped = run_refine_shard(dataset, ["good"], dict(RELEASED_PARAMS), store, out)
    assert skipped == []
    with Image.open(out / "good.png") as im:
        assert im.mode == "P" and im.size == (W, H)
        labels = np.asarray(im)
        palette = np.asarray(im.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    assert np.array_equal(palette, default_palette())
    expected = refine_image(quadrant_maps(), quadrant_image(H, W), [1, 2, 3], RELEASED_PARAMS, "always")
    assert np.array_equal(labels, expected)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and len(np.unique(labels)) >= 2
    assert read_skipped(out / "skipped.csv") == []
    assert (out / "skipped.csv").read_text() == "image_id,stage,reason\n"


def test_skip_lists_missing_maps_and_size_mismatch_and_goes_on(shard):
    dataset, store, root = shard
    out = root / "masks"
    skipped = run_refine_shard(dataset, ["wrong_size", "good", "not_in_store"], dict(RELEASED_PARAMS), store, out,
                               on_error="skip")
    rows = read_skipped(out / "skipped.csv")
    assert rows == skipped
    by_id = {r["image_id"]: r for r in rows}
    assert set(by_id) == {"wrong_size", "not_in_store"}
    assert by_id["not_in_store"]["stage"] == "gradcam"
    assert by_id["wrong_size"]["stage"] == "refine"
    assert "wrong_size.png" in by_id["wrong_size"]["reason"] and "84x60" in by_id["wrong_size"]["reason"]
    assert (out / "good.png").is_file() and not (out / "wrong_size.png").exists()


def test_fail_stops_with_an_error_naming_the_image_file(shard):
    dataset, store, root = shard
    with pytest.raises(DatasetError, match=r"wrong_size\.png: image is 84x60 .* recorded for 80x60"):
        run_refine_shard(dataset, ["wrong_size"], dict(RELEASED_PARAMS), store, root / "masks")


def test_missing_maps_are_listed_even_when_failing_is_asked(shard):
    """Maps missing from the store were skipped upstream (gradcam on_error=skip): not this stage's failure."""
    dataset, store, root = shard
    skipped = run_refine_shard(dataset, ["not_in_store"], dict(RELEASED_PARAMS), store, root / "masks")
    assert [r["image_id"] for r in skipped] == ["not_in_store"]


def test_unreadable_crf_image_is_a_clear_error(shard):
    dataset, store, root = shard
    (root / "images" / "good.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="good.png: unreadable"):
        run_refine_shard(dataset, ["good"], dict(RELEASED_PARAMS), store, root / "masks")


def test_log_file_gets_the_summary(shard):
    dataset, store, root = shard
    log_path = root / "logs" / "refine.log"
    run_refine_shard(dataset, ["good", "not_in_store"], dict(RELEASED_PARAMS), store, root / "masks", log=log_path)
    text = log_path.read_text()
    assert "refined 1 images" in text and "skipped not_in_store" in text
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("pnp_ovss.stages.refine").handlers)


def test_no_class_image_is_all_background(tmp_path):
    store = write_fixture(tmp_path, {"empty": quadrant_image(H, W)},
                          {"empty": (np.zeros((0, 4, 21, 21), np.float32), [], (H, W))})
    run_refine_shard(FakeDataset(tmp_path), ["empty"], dict(RELEASED_PARAMS), store, tmp_path / "m")
    with Image.open(tmp_path / "m" / "empty.png") as im:
        assert np.all(np.asarray(im) == 0)


def test_incomplete_params_are_rejected_before_any_work(shard):
    dataset, store, root = shard
    with pytest.raises(ValueError, match="lack"):
        run_refine_shard(dataset, ["good"], {"postprocess": "crf"}, store, root / "masks")


def test_skipped_csv_quotes_reasons_with_commas():
    text = skipped_csv_text([{"image_id": "a", "stage": "refine", "reason": "bad, very bad"}])
    assert text == 'image_id,stage,reason\na,refine,"bad, very bad"\n'


def test_work_folder_resumes_and_is_renamed_into_place(shard):
    """A killed refine job leaves its finished maps in the work folder; the rerun keeps them (not
    recomputed) and publishes the folder into the (Snakemake-deleted) output with one rename."""
    dataset, store, root = shard
    work = root / "work" / "shard-0000"
    out = root / "masks" / "shard-0000"
    work.mkdir(parents=True)
    sentinel = np.full((H, W), 7, np.uint8)  # a map "finished by the earlier run": must be kept as is
    write_label_png(work / "good.png", sentinel)
    run_refine_shard(dataset, ["good"], dict(RELEASED_PARAMS), store, out, work_dir=work)
    assert not work.exists()
    assert np.array_equal(np.asarray(Image.open(out / "good.png")), sentinel)
    assert (out / "skipped.csv").is_file()


def test_publishing_refuses_a_non_empty_output(shard):
    dataset, store, root = shard
    out = root / "masks" / "shard-0000"
    out.mkdir(parents=True)
    (out / "stale.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not empty"):
        run_refine_shard(dataset, ["good"], dict(RELEASED_PARAMS), store, out, work_dir=root / "work")

"""The GradCAM stage job (issue #3): per-image Zarr entries and their contents, resume after a crash
(faithful: a partly finished batch is recomputed whole, its finished images are not rewritten) and after a
real SIGKILL of a running job."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from support.fakes import CLASS_LISTS, FakeDataset, write_images
from pnp_ovss import entries
from pnp_ovss.entries import entry_path, write_labels_entry
from pnp_ovss.config import short_hash
from pnp_ovss.ordering import batches_of
from pnp_ovss.stages import gradcam as gradcam_stage
from pnp_ovss.stages.job import ShardWork
from pnp_ovss.store import open_store, read_image_maps

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def stage_params(model_dir, **over) -> dict:
    p = {
        "stage": "gradcam",
        "upstream": "0123456789",
        "model": str(model_dir),
        "image_size": 160,
        "layer": 8,
        "head": 9,
        "drop_iter": 2,
        "drop_patches": 5,
        "batch_size": 2,
        "autocast": "none",
        "normalize_ade": False,
        "exclude_sep_rows": False,
        "mean_last_class": False,
    }
    p.update(over)
    return p


def make_shard(root: Path, n: int, empty: tuple[int, ...] = ()):
    ids = [f"img_{i:03d}" for i in range(n)]
    write_images(root / "images", ids)
    labels = {}
    for i, image_id in enumerate(ids):
        names = [] if i in empty else CLASS_LISTS[i % len(CLASS_LISTS)]
        labels[image_id] = {"selected": list(range(1, len(names) + 1)), "names": names}
    return FakeDataset(root, ids), ids, labels


def shard_work(ids, labels, stage_dir: Path, log=None) -> ShardWork:
    """The job's work: gradcam keys ``G<id>`` in ``stage_dir``, labels entries ``L<id>`` (written here when
    missing) in ``<stage_dir>-labels``."""
    labels_dir = stage_dir.parent / f"{stage_dir.name}-labels"
    for image_id in ids:
        if not entry_path(labels_dir, "labels", f"L{image_id}").exists():
            write_labels_entry(labels_dir, f"L{image_id}", image_id, labels[image_id])
    return ShardWork({i: f"G{i}" for i in ids}, stage_dir, stage_dir / "jobs" / "job.json",
                     {i: f"L{i}" for i in ids}, labels_dir, "shard-0000", log)


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run_logged(ds, ids, params, labels, stage_dir, **kw):
    log = logging.getLogger(f"test.gradcam.{time.monotonic_ns()}")
    log.setLevel(logging.INFO)
    h = ListHandler()
    log.addHandler(h)
    log.propagate = False
    gradcam_stage.run_gradcam_job(ds, ids, params, shard_work(ids, labels, stage_dir, log), progress=False, **kw)
    return h.messages


def ids_logged(messages, verb):
    return [m.split(" ")[1] for m in messages if m.startswith(verb + " ")]


def maps_of(stage_dir: Path, image_id: str):
    return read_image_maps(open_store(entry_path(stage_dir, "gradcam", f"G{image_id}")), image_id)


def stored_ids(stage_dir: Path, ids) -> set[str]:
    return {i for i in ids if entry_path(stage_dir, "gradcam", f"G{i}").is_dir()}


def crash_when_writing(monkeypatch, image_id):
    real = entries.write_gradcam_entry

    def write(stage_dir, key, item, *args, **kw):
        if item.image_id == image_id:
            raise RuntimeError("simulated crash")
        return real(stage_dir, key, item, *args, **kw)

    monkeypatch.setattr(entries, "write_gradcam_entry", write)
    return lambda: monkeypatch.setattr(entries, "write_gradcam_entry", real)


def test_entries_contents_and_rerun(tmp_path, tiny_model):
    ds, ids, labels = make_shard(tmp_path, 5, empty=(3,))
    params = stage_params(tiny_model, exclude_sep_rows=True, mean_last_class=True)
    out = tmp_path / "gradcam"
    msgs = run_logged(ds, ids, params, labels, out, device="cpu")
    assert stored_ids(out, ids) == set(ids)
    assert sorted(ids_logged(msgs, "stored")) == sorted(ids)
    record = json.loads((out / "jobs" / "job.json").read_text())
    assert record["computed"] == sorted(ids) and record["reused"] == 0 and record["stage"] == "gradcam"
    for i, image_id in enumerate(ids):
        item = maps_of(out, image_id)
        k = len(labels[image_id]["names"])
        assert item.maps.shape == (k, 2, 10, 10) and item.maps.dtype == np.float32
        h, w = ds.image_size(image_id)
        a = item.attrs
        assert a["class_ids"] == labels[image_id]["selected"]
        assert a["class_names"] == labels[image_id]["names"]
        assert a["orig_size"] == [h, w]
        assert (a["image_size"], a["layer"], a["head"]) == (160, 8, 9)
        assert a["model"] == str(tiny_model) and "model_revision" in a
        assert short_hash(a["params"]) == short_hash(params)
        assert a["complete"] is True
        if k:
            assert item.dropped.shape == (2, 5) and item.dropped.dtype == np.int32
            assert a["caption"] == "A picture of " + " ".join(labels[image_id]["names"])
            assert item.maps[:, 0].any()
        else:  # no confident class: stored with K = 0 and no drop iterations
            assert item.dropped.shape == (0, 5)
    # a rerun on a finished job does nothing
    again = run_logged(ds, ids, params, labels, out, device="cpu")
    assert not ids_logged(again, "computed") and not ids_logged(again, "stored")


def test_stage_results_equal_gradcam_batch_in_the_given_batches(tmp_path, tiny_blip, tiny_model):
    from pnp_ovss.backends.blip import gradcam_batch
    from pnp_ovss.gradcam import preprocess_image
    from PIL import Image

    from pnp_ovss.io import read_image
    import torch

    ds, ids, labels = make_shard(tmp_path, 3)
    params = stage_params(tiny_model, batch_size=3)
    run_logged(ds, ids, params, labels, tmp_path / "out", device="cpu")
    model, tok = tiny_blip
    x = torch.stack([preprocess_image(Image.fromarray(read_image(ds.image_path(i))), 160) for i in ids])
    want = gradcam_batch(model, tok, x, [labels[i]["names"] for i in ids], params)
    for image_id, w in zip(ids, want):
        got = maps_of(tmp_path / "out", image_id)
        np.testing.assert_allclose(got.maps, w.maps, rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(got.dropped, w.dropped)


def test_released_ade_input_follows_the_dataset_and_the_fix(tmp_path, tiny_model, monkeypatch):
    from pnp_ovss.backends.blip import BlipBackend

    seen = []
    real = BlipBackend.preprocess

    def spy(self, image, size, released_ade=False, model=None):
        seen.append(released_ade)
        return real(self, image, size, released_ade, model)

    monkeypatch.setattr(BlipBackend, "preprocess", spy)
    ds, ids, labels = make_shard(tmp_path, 1)
    ds.unnormalised_input = True
    run_logged(ds, ids, stage_params(tiny_model), labels, tmp_path / "o1", device="cpu")
    run_logged(ds, ids, stage_params(tiny_model, normalize_ade=True), labels, tmp_path / "o2", device="cpu")
    assert seen == [True, False]


def test_faithful_resume_recomputes_a_partial_batch_without_rewriting_its_complete_images(tmp_path, tiny_model, monkeypatch):
    ds, ids, labels = make_shard(tmp_path, 6)
    params = stage_params(tiny_model)  # faithful, batches of 2
    run_logged(ds, ids, params, labels, tmp_path / "ref", device="cpu")

    out = tmp_path / "out"
    restore = crash_when_writing(monkeypatch, "img_003")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_logged(ds, ids, params, labels, out, device="cpu")
    restore()
    assert stored_ids(out, ids) == {"img_000", "img_001", "img_002"}
    assert not (out / "jobs" / "job.json").exists()

    msgs = run_logged(ds, ids, params, labels, out, device="cpu")
    # batch 1 skipped; batch 2 (img_002 complete, img_003 not) recomputed whole, only img_003 rewritten
    assert ids_logged(msgs, "computed") == ["img_002", "img_003", "img_004", "img_005"]
    assert ids_logged(msgs, "stored") == ["img_003", "img_004", "img_005"]
    for image_id in ids:
        got, want = maps_of(out, image_id), maps_of(tmp_path / "ref", image_id)
        np.testing.assert_allclose(got.maps, want.maps, rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(got.dropped, want.dropped)


def test_clean_resume_computes_only_unfinished_images(tmp_path, tiny_model, monkeypatch):
    ds, ids, labels = make_shard(tmp_path, 4)
    params = stage_params(tiny_model, exclude_sep_rows=True, mean_last_class=True)
    restore = crash_when_writing(monkeypatch, "img_003")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_logged(ds, ids, params, labels, tmp_path / "out", device="cpu")
    restore()
    msgs = run_logged(ds, ids, params, labels, tmp_path / "out", device="cpu")
    assert ids_logged(msgs, "computed") == ["img_003"]
    assert stored_ids(tmp_path / "out", ids) == set(ids)


KILL_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, time
    sys.path.insert(0, {tests!r})
    from support.fakes import FakeDataset
    from pnp_ovss.stages.gradcam import run_gradcam_job
    from pnp_ovss.stages.job import ShardWork

    cfg = json.load(open(sys.argv[1]))

    class SlowDataset(FakeDataset):
        def image_path(self, image_id):
            time.sleep(cfg["delay"])
            return super().image_path(image_id)

    log = logging.getLogger("shard")
    log.setLevel(logging.INFO)
    log.addHandler(logging.FileHandler(cfg["log"]))
    ds = SlowDataset(cfg["images"], cfg["ids"])
    work = ShardWork(*cfg["work"], log=log)
    run_gradcam_job(ds, cfg["ids"], cfg["params"], work, device="cpu", progress=False)
    """
)


@pytest.mark.parametrize("mode", ["faithful", "clean"])
def test_killed_job_resumes_without_recomputing_complete_images(tmp_path, tiny_model, mode):
    ds, ids, labels = make_shard(tmp_path, 8)
    clean = mode == "clean"
    params = stage_params(tiny_model, exclude_sep_rows=clean, mean_last_class=clean)
    out = tmp_path / "out"
    work = shard_work(ids, labels, out)
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT.format(tests=str(TESTS)))
    log1 = tmp_path / "run1.log"
    cfg = {
        "images": str(tmp_path), "ids": ids, "params": params, "log": str(log1), "delay": 0.3,
        "work": [work.keys, str(work.stage_dir), str(work.record), work.upstream_keys, str(work.upstream_dir), work.shard],
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cfg.json")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while True:
            text = log1.read_text() if log1.exists() else ""
            # two whole batches stored: the kill lands while batch 3 is read or computed
            if len(ids_logged(text.splitlines(), "stored")) >= 4:
                break
            if proc.poll() is not None:
                pytest.fail(f"the job ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the job stored nothing within 120 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    stored1 = ids_logged(log1.read_text().splitlines(), "stored")
    complete1 = stored_ids(out, ids)
    assert set(stored1) == complete1 and 4 <= len(complete1) < len(ids)
    assert not work.record.exists()

    msgs = run_logged(ds, ids, params, labels, out, device="cpu")
    stored2, computed2 = ids_logged(msgs, "stored"), ids_logged(msgs, "computed")
    assert stored_ids(out, ids) == set(ids)
    missing = [i for i in ids if i not in complete1]
    assert sorted(stored1 + stored2) == sorted(ids) and stored2 == missing  # every image stored exactly once
    # clean: no complete image computed again; faithful: only the batches with a missing image, whole
    batches = [b for b in batches_of(ids, 2) if set(b) - complete1]
    assert computed2 == (missing if clean else [i for b in batches for i in b])


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_fault_hook_counts_images_whatever_the_batch_size(tmp_path, tiny_model, monkeypatch, batch_size):
    """``PNP_OVSS_FAULT=gradcam:3:kill`` must fire at the third stored image, also with batches of 2."""
    seen = []
    monkeypatch.setattr(gradcam_stage, "after_image", lambda stage, n: seen.append((stage, n)))
    ds, ids, labels = make_shard(tmp_path, 5)
    run_logged(ds, ids, stage_params(tiny_model, batch_size=batch_size), labels, tmp_path / "o", device="cpu")
    assert seen == [("gradcam", n) for n in range(1, 6)]

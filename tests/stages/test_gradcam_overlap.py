"""Inside a GradCAM job: reading the next batch and writing the last one beside the model (issue #14).

`pipelined` on fake sides (order, read-ahead, errors), then `run_gradcam_job` on the tiny BLIP with and
without overlap: the stores must be identical, array for array.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from support.fakes import CLASS_LISTS, FakeDataset, write_images
from pnp_ovss.entries import entry_path, write_labels_entry
from pnp_ovss.stages.gradcam import pipelined, run_gradcam_job
from pnp_ovss.stages.job import ShardWork
from pnp_ovss.store import open_store, read_image_maps


def test_pipelined_writes_in_order_what_inline_writes():
    items = list(range(7))
    outs = {}
    for overlap in (True, False):
        written = []
        pipelined(items, lambda i: i * 10, lambda x: x + 1, lambda i, r, c: written.append((i, r, c)), overlap=overlap)
        outs[overlap] = written
    assert outs[True] == outs[False] == [(i, i * 10, i * 10 + 1) for i in items]


def test_next_batch_is_read_while_the_model_works_and_no_further_ahead():
    started = {}
    reads_ahead = []
    state = {"computed": 0}
    lock = threading.Lock()

    def read(i):
        with lock:
            started[i] = True
            reads_ahead.append(i - state["computed"])
        return i

    def compute(i):
        if i + 1 < 5:
            deadline = time.monotonic() + 5
            while (i + 1) not in started and time.monotonic() < deadline:
                time.sleep(0.005)
            assert (i + 1) in started, f"batch {i + 1} was not read while batch {i} was computed"
        time.sleep(0.02)
        with lock:
            state["computed"] += 1
        return i

    timings = {}
    pipelined(list(range(5)), read, compute, lambda *a: None, timings=timings)
    # the reader is never more than one batch ahead of the model
    assert max(reads_ahead) <= 1
    assert timings["batches"] == 5 and timings["compute"] >= 0.1 and timings["wall"] >= timings["compute"]


def test_a_model_error_stops_the_loop_after_the_finished_batches_are_written():
    written = []

    def compute(i):
        if i == 2:
            raise RuntimeError("out of memory")
        return i

    def write(i, r, c):
        time.sleep(0.05)  # slower than the model: batch 1 is still being written when batch 2 fails
        written.append(i)

    with pytest.raises(RuntimeError, match="out of memory"):
        pipelined(list(range(5)), lambda i: i, compute, write)
    assert written == [0, 1]


@pytest.mark.parametrize("side", ["read", "write"])
def test_errors_of_the_reader_and_the_writer_reach_the_caller(side):
    def boom(*args):
        if args[0] == 1:
            raise ValueError(f"{side} failed")
        return args[0]

    read = boom if side == "read" else (lambda i: i)
    write = boom if side == "write" else (lambda *a: None)
    with pytest.raises(ValueError, match=f"{side} failed"):
        pipelined([0, 1, 2], read, lambda x: x, write)


def _job(tmp_path, tiny_model, overlap, name):
    ids = [f"img_{i:03d}" for i in range(5)]
    write_images(tmp_path / "images", ids)
    ds = FakeDataset(tmp_path, ids)
    labels_dir = tmp_path / "labels"
    for i, image_id in enumerate(ids):
        names = [] if i == 3 else CLASS_LISTS[i % len(CLASS_LISTS)]
        write_labels_entry(labels_dir, f"L{image_id}", image_id, {"selected": list(range(1, len(names) + 1)), "names": names})
    params = {"stage": "gradcam", "upstream": "u", "model": str(tiny_model), "image_size": 160, "layer": 8, "head": 9,
              "drop_iter": 2, "drop_patches": 5, "batch_size": 2, "autocast": "none", "normalize_ade": False,
              "exclude_sep_rows": False, "mean_last_class": False}
    stage_dir = tmp_path / name
    timings = {}
    work = ShardWork({i: f"G{i}" for i in ids}, stage_dir, stage_dir / "job.json", {i: f"L{i}" for i in ids}, labels_dir)
    computed = run_gradcam_job(ds, ids, params, work, device="cpu", progress=False, overlap=overlap, timings=timings)
    return ids, stage_dir, computed, timings


def test_gradcam_job_with_overlap_stores_exactly_what_it_stores_without(tmp_path, tiny_model):
    ids, with_overlap, computed_a, timings = _job(tmp_path / "a", tiny_model, True, "gc")
    _, without, computed_b, _ = _job(tmp_path / "b", tiny_model, False, "gc")
    assert computed_a == computed_b == ids
    for image_id in ids:
        a = read_image_maps(open_store(entry_path(with_overlap, "gradcam", f"G{image_id}")), image_id)
        b = read_image_maps(open_store(entry_path(without, "gradcam", f"G{image_id}")), image_id)
        assert np.array_equal(a.maps, b.maps) and np.array_equal(a.dropped, b.dropped)
        assert a.attrs == b.attrs
    assert timings["batches"] == 3 and timings["read"] > 0 and timings["compute"] > 0

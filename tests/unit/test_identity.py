"""Per-image identity and the parse-time plan of jobs (no snakemake, no model)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pnp_ovss.entries import entry_path, write_labels_entry, write_skip
from pnp_ovss.datasets.folder import demo_root
from pnp_ovss.identity import DigestCache, gradcam_keys, key_of
from pnp_ovss.ordering import faithful_order
from pnp_ovss.plan import effective_shard_size, make_plan, plan_warnings, sync_job_records
from pnp_ovss.config import normalise


def test_digest_cache_reads_a_file_once_and_again_when_it_changes(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"one")
    cache = DigestCache(tmp_path / "d.json")
    first = cache.digest(f)
    cache.save()
    again = DigestCache(tmp_path / "d.json")
    assert again.digest(f) == first and not again.dirty  # from the cache: no read
    f.write_bytes(b"two!")
    assert again.digest(f) != first and again.dirty
    assert again.digest(tmp_path / "absent") == "missing"


def test_batch_dependent_keys_follow_the_batch_and_independent_keys_the_image():
    shards = {"shard-0000": ["a", "b", "c", "d"]}
    labels = {i: key_of(i) for i in "abcd"}
    changed = {**labels, "b": key_of("b", "other classes")}
    dep, dep2 = (gradcam_keys("g", shards, lk, 2, True) for lk in (labels, changed))
    assert dep["a"] != dep2["a"] and dep["b"] != dep2["b"]  # b's batch: both change
    assert dep["c"] == dep2["c"] and dep["d"] == dep2["d"]  # the other batch: unchanged
    ind, ind2 = (gradcam_keys("g", shards, lk, 2, False) for lk in (labels, changed))
    assert [i for i in "abcd" if ind[i] != ind2[i]] == ["b"]
    # another shard cut of the same batches gives the same keys
    assert gradcam_keys("g", {"s0": ["a", "b"], "s1": ["c", "d"]}, labels, 2, True) == dep


def cfg(tmp_path, **extra):
    return {"results": str(tmp_path / "results"), "gradcam": {"model": "m", "batch_size": 2}, **extra}


def keys_of(plan, stage):
    run = plan.runs[0]
    h = getattr(run, stage)
    return {i: plan.image_key(h, i) for i in plan.image_ids}


def test_shard_size_and_limit_are_in_no_key(tmp_path):
    base = make_plan(cfg(tmp_path, shard_size=2))
    other = make_plan(cfg(tmp_path, shard_size=4, limit=6))
    assert base.runs == other.runs  # the stage folders
    for stage in ("labels", "gradcam", "refine", "evaluate"):
        assert keys_of(base, stage) == keys_of(other, stage)
    assert base.views == other.views and base.eval_sets == other.eval_sets
    assert len(base.shards) == 3 and len(other.shards) == 2


def test_a_limit_that_cuts_a_faithful_batch_changes_only_that_batch(tmp_path):
    full = make_plan(cfg(tmp_path, shard_size=2))
    cut = make_plan(cfg(tmp_path, shard_size=2, limit=5))
    order = faithful_order(sorted(p.stem for p in (demo_root() / "images").iterdir()))
    assert full.image_ids == order
    changed = [i for i in cut.image_ids if keys_of(cut, "gradcam")[i] != keys_of(full, "gradcam")[i]]
    assert changed == [order[4]]
    assert keys_of(cut, "labels") == {i: keys_of(full, "labels")[i] for i in cut.image_ids}


def test_faithful_shards_hold_whole_batches():
    assert effective_shard_size(normalise({"shard_size": 10})) == 35
    assert effective_shard_size(normalise({"shard_size": 10, "mode": "clean"})) == 10
    assert effective_shard_size(normalise({"shard_size": 70})) == 70
    assert "each shard holds whole batches (35 images)" in plan_warnings(normalise({"shard_size": 10}))[0]


def test_image_bytes_are_in_the_keys(tmp_path):
    images = tmp_path / "photos"
    shutil.copytree(demo_root() / "images", images)
    conf = cfg(tmp_path, dataset="folder", images=str(images), classes="a,b", mode="clean")
    before = make_plan(conf)
    (images / "lake.png").write_bytes((images / "beach.png").read_bytes())
    os.utime(images / "lake.png", ns=(1, 1))  # even with an old mtime: the size/mtime pair changed
    after = make_plan(conf)
    for stage in ("labels", "gradcam", "refine"):
        diff = [i for i in before.image_ids if keys_of(before, stage)[i] != keys_of(after, stage)[i]]
        assert diff == ["lake"], stage


def test_jobs_with_every_result_are_recorded_and_stale_records_removed(tmp_path):
    conf = cfg(tmp_path, shard_size=2, mode="clean")
    plan = make_plan(conf)
    lh = plan.runs[0].labels
    labels_jobs = plan.stage_jobs[lh]
    assert all(j.needed for j in labels_jobs)
    # the first shard's labels exist: its job has nothing to do
    first = labels_jobs[0]
    for i in first.ids:
        write_labels_entry(plan.stage_dir("labels", lh), first.keys[i], i, {"selected": [], "names": []})
    plan = make_plan(conf)
    assert [j.needed for j in plan.stage_jobs[lh]] == [False, True, True]
    assert sync_job_records(plan) == (1, 0)
    record = Path(plan.job_output(plan.stage_jobs[lh][0]))
    assert record.is_file()
    # an entry deleted by hand: the record goes, so Snakemake runs the job again
    entry_path(plan.stage_dir("labels", lh), "labels", first.keys[first.ids[0]]).unlink()
    plan = make_plan(conf)
    assert sync_job_records(plan) == (0, 1) and not record.exists()


def test_a_skipped_image_counts_as_done_only_with_on_error_skip(tmp_path):
    conf = cfg(tmp_path, shard_size=6, mode="clean")
    plan = make_plan(conf)
    gh = plan.runs[0].gradcam
    job = plan.stage_jobs[gh][0]
    for i in job.ids:
        write_skip(plan.stage_dir("gradcam", gh), job.keys[i], i, "gradcam", "unreadable")
    assert make_plan({**conf, "on_error": "skip"}).stage_jobs[gh][0].missing == []
    assert make_plan(conf).stage_jobs[gh][0].missing == job.ids


@pytest.fixture
def live(monkeypatch):
    from support.openai_server import SECRET_KEY, FakeOpenAIServer

    server = FakeOpenAIServer().start()
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    yield server
    server.stop()


def test_answer_cache_is_per_question_not_per_image_id(live, tmp_path):
    from support.openai_server import FakeDataset, settings

    from pnp_ovss.labels.openai_live import query_answers

    ds = FakeDataset("voc", tmp_path / "img", ["x", "y"])
    shutil.copy(ds.image_path("x"), ds.image_path("y"))  # the same picture twice
    query_answers(ds, ["x", "y"], settings(), tmp_path / "answers")
    assert len(live.requests) == 1
    assert len(list((tmp_path / "answers").glob("*.json"))) == 1
    query_answers(ds, ["x"], settings(temperature=0.5), tmp_path / "answers")  # another question
    assert len(live.requests) == 2

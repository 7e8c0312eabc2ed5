"""Each stage cuts its own jobs (issue #20): the model stages (gradcam, search maps) in jobs sized for where they
run, the CPU stages by shard; no key depends on any size, and a record written for a job that has nothing to do
is dated like its results, so that Snakemake reruns nothing downstream of it."""

import os
from pathlib import Path

import pytest

from pnp_ovss.config import model_job_images, model_jobs_on_gpu, normalise, profile_gives_gpu
from pnp_ovss.entries import write_labels_entry
from pnp_ovss.ordering import group_shards
from pnp_ovss.plan import make_plan, sync_job_records, without_scheduling


def cfg(tmp_path, **extra):
    return {"results": str(tmp_path / "results"), "mode": "clean", "gradcam": {"model": "m", "batch_size": 2},
            **extra}


def test_shards_are_grouped_into_balanced_jobs_of_whole_shards():
    names = [f"s{i}" for i in range(10)]
    assert [len(g) for g in group_shards(names, 35, 140)] == [4, 3, 3]  # not 4, 4, 2
    assert group_shards(names, 35, 35) == [[n] for n in names]
    assert group_shards(names, 35, 10**6) == [names]
    assert [len(g) for g in group_shards([f"s{i}" for i in range(143)], 35, 2533)] == [72, 71]
    assert sum(group_shards(names, 3, 7), []) == names  # in order, each shard once
    assert group_shards([], 35, 500) == []
    with pytest.raises(ValueError):
        group_shards(names, 0, 5)


def test_a_gpu_job_holds_enough_images_that_its_set_up_is_a_small_share():
    gpu = normalise({"model_jobs": {"setup_seconds": 4, "gpu_seconds_per_image": 0.03, "setup_share": 0.05}})
    n = model_job_images(gpu, True)
    assert n == 2534  # the smallest n with 4 s <= 5 % of (4 s + n * 0.03 s)
    assert 4 / (4 + n * 0.03) <= 0.05 < 4 / (4 + (n - 1) * 0.03)
    fast_setup = normalise({"model_jobs": {"setup_seconds": 0.1}})
    assert model_job_images(fast_setup, True) == 500  # never fewer than min_gpu_images
    assert model_job_images(normalise({"model_jobs": {"setup_seconds": 0.1, "min_gpu_images": 64}}), True) == 64
    # on the CPU a job's model time dwarfs its set-up: one shard per job, as before
    assert model_job_images(gpu, False) == 35
    # a key overrides, wherever the jobs run
    assert model_job_images(normalise({"model_jobs": {"images": 7}}), True) == 7
    assert model_job_images(normalise({"model_jobs": {"images": 7}}), False) == 7


@pytest.mark.parametrize(
    "model_jobs, device, machine, profile, expected",
    [
        ({"sized_for": "gpu"}, "cpu", False, None, True),  # said outright
        ({"sized_for": "cpu"}, "cuda", True, True, False),
        ({}, "cuda", False, None, True),  # a CPU login node planning for device cuda
        ({}, "cpu", True, True, False),
        ({}, "auto", False, True, True),  # the profile gives gradcam a GPU: sized for it, wherever it plans
        ({}, "auto", True, False, False),  # the profile gives it none
        ({}, "auto", True, None, True),  # the profile says nothing: this machine decides
        ({}, "auto", False, None, False),
    ],
)
def test_where_model_jobs_are_sized_for(model_jobs, device, machine, profile, expected):
    config = normalise({"model_jobs": model_jobs, "gradcam": {"device": device}})
    assert model_jobs_on_gpu(config, machine, profile) is expected


class Resource:  # what snakemake's parsed --set-resources hold
    def __init__(self, value):
        self.value = value


def test_a_profile_gives_gradcam_a_gpu_by_any_of_its_spellings():
    assert profile_gives_gpu({}) is None
    assert profile_gives_gpu({"refine": {"gpu": 1}}) is None
    assert profile_gives_gpu({"gradcam": {"runtime": 60}}) is None
    assert profile_gives_gpu({"gradcam": {"gpu": 1}}) is True
    assert profile_gives_gpu({"gradcam": {"gpu": Resource(1)}}) is True
    assert profile_gives_gpu({"gradcam": {"gpu": 0}}) is False
    assert profile_gives_gpu({"gradcam": {"gpus": "2"}}) is True
    assert profile_gives_gpu({"gradcam": {"gres": Resource("gpu:a100:1")}}) is True
    assert profile_gives_gpu({"gradcam": {"gres": "shard:1"}}) is False
    assert profile_gives_gpu({"gradcam": {"gpu_model": "h100"}}) is True


def test_model_jobs_hold_whole_shards_and_each_cpu_job_has_one_upstream_job(tmp_path):
    plan = make_plan(cfg(tmp_path, shard_size=2, model_jobs={"images": 4}), model_on_gpu=True)
    run = plan.runs[0]
    labels, gradcam, refine, evaluate = (plan.stage_jobs[getattr(run, s)] for s in ("labels", "gradcam", "refine",
                                                                                    "evaluate"))
    assert [len(j.ids) for j in labels] == [2, 2, 2] and [len(j.ids) for j in refine] == [2, 2, 2]
    assert [j.shards for j in gradcam] == [["shard-0000", "shard-0001"], ["shard-0002"]]
    assert [j.shard for j in gradcam] == ["shard-0000..0001", "shard-0002"]
    assert gradcam[0].name.startswith("shard-0000-") and gradcam[1].name.startswith("shard-0002-")
    # a model job waits for the labels jobs of its shards; a refine job for the one model job holding its shard
    assert [u.name for u in gradcam[0].upstream] == [labels[0].name, labels[1].name]
    assert plan.upstream_output(run.gradcam, gradcam[0].name) == [plan.job_output(j) for j in labels[:2]]
    assert [[u.name for u in j.upstream] for j in refine] == [[gradcam[0].name], [gradcam[0].name], [gradcam[1].name]]
    assert [[u.name for u in j.upstream] for j in evaluate] == [[j.name] for j in refine]
    # a job's upstream keys are its images' keys in the stage before
    labels_keys = plan.stage_keys(run.labels)
    assert plan.job_work(run.gradcam, gradcam[0].name)["upstream"] == {i: labels_keys[i] for i in gradcam[0].ids}


def test_job_sizes_are_in_no_key_and_in_no_view(tmp_path):
    sizes = [dict(shard_size=2), dict(shard_size=2, model_jobs={"images": 6}),
             dict(shard_size=3, model_jobs={"images": 3, "sized_for": "gpu"})]
    plans = [make_plan(cfg(tmp_path, **s), model_on_gpu=True) for s in sizes]
    base = plans[0]
    assert [len(p.model_groups) for p in plans] == [1, 1, 2]  # 500 images on a GPU by default: one job of 6
    for plan in plans[1:]:
        assert plan.runs == base.runs
        for stage in ("labels", "gradcam", "refine", "evaluate"):
            h = getattr(plan.runs[0], stage)
            assert plan.stage_keys(h) == base.stage_keys(h), stage
        assert plan.views == base.views and plan.eval_sets == base.eval_sets
    a, b = (without_scheduling(normalise(cfg(tmp_path, **s))) for s in sizes[:2])
    assert a == b


def test_search_maps_jobs_are_model_jobs(tmp_path):
    plan = make_plan(cfg(tmp_path, shard_size=2, search={"images": 5}), model_on_gpu=True)
    jobs = plan.stage_jobs[plan.search.maps_hash]
    assert len(jobs) == 1 and jobs[0].ids == plan.image_ids[:5]
    assert [u.name for u in jobs[0].upstream] == [j.name for j in plan.stage_jobs[plan.runs[0].labels]]
    on_cpu = make_plan(cfg(tmp_path, shard_size=2, search={"images": 5}))
    assert [len(j.ids) for j in on_cpu.stage_jobs[on_cpu.search.maps_hash]] == [2, 2, 1]


def test_a_record_written_for_a_job_without_work_is_dated_like_its_results(tmp_path):
    conf = cfg(tmp_path, shard_size=2)
    plan = make_plan(conf)
    lh = plan.runs[0].labels
    old = 1_600_000_000 * 10**9
    for job in plan.stage_jobs[lh]:
        for offset, image_id in enumerate(job.ids):
            write_labels_entry(plan.stage_dir("labels", lh), job.keys[image_id], image_id, {"selected": [], "names": []})
            entry = Path(plan.stage_dir("labels", lh)) / "images" / f"{job.keys[image_id]}.json"
            os.utime(entry, ns=(old + offset, old + offset))
    plan = make_plan(conf)
    assert sync_job_records(plan)[0] == 3
    for job in plan.stage_jobs[lh]:
        assert os.stat(plan.record_path(job)).st_mtime_ns == old + len(job.ids) - 1


def test_a_model_job_imports_nothing_it_does_not_use():
    """The set-up of a gradcam job is its imports and its weights: the rule script's modules pull in no
    table, plotting, API, search or DenseCRF library (each costs a model job start-up time, on every job)."""
    import subprocess
    import sys

    from support import ROOT

    heavy = ("pandas", "matplotlib", "openai", "optuna", "scipy", "pydensecrf", "pycocotools", "transformers")
    code = (
        "import sys; sys.path.insert(0, 'src');"
        "import pnp_ovss.stages.gradcam, pnp_ovss.stages.job, pnp_ovss.stages.labels, pnp_ovss.datasets;"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == []  # transformers comes with the backend, when the model is loaded

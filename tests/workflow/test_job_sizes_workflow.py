"""Job sizes only schedule (issue #20), through the real snakemake on the demo with the tiny BLIP: a model job
sized for a GPU holds every shard; cutting the jobs another way (other model job sizes, the CPU's sizing,
other shards) computes no image again, and the tables stay the same."""

from __future__ import annotations

import json

import pytest

from support import model_config, planned, smk
from support.worklog import WorkLog

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

NOTHING = {"labels": [], "gradcam": [], "refine": []}


def records(out, stage):
    return sorted(json.loads(p.read_text())["shard"] for p in out.glob(f"{stage}/*/jobs/*.json"))


def test_model_jobs_sized_for_a_gpu_and_recut_without_recomputing(repo_copy, tiny_model):
    out = repo_copy / "results" / "demo"
    work = WorkLog(repo_copy / "results")
    base = ("--cores", "2", "--config", model_config(tiny_model, batch_size=2), "shard_size=2")

    # sized for a GPU (said outright; the job itself runs on this machine's CPU): one model job, 500+ images
    first = smk(repo_copy, *base, "model_jobs={sized_for: gpu}")
    assert planned(first)["gradcam"] == 1 and planned(first)["refine"] == 3 and planned(first)["labels"] == 3
    assert "6 images in 3 shards (1 model job(s) sized for the GPU)" in first.stderr
    assert records(out, "gradcam") == ["shard-0000..0002"]
    done = work.take()
    assert all(len(ids) == 6 for ids in done.values()), done
    log = next(out.glob("logs/gradcam/*/shard-0000-*.log")).read_text()
    # the set-up (process start to the weights on the device) is logged apart from the model's time
    assert "gradcam shard-0000..0002: set-up " in log and "s start and imports" in log
    assert "gradcam shard-0000..0002: 6 images through the model in " in log
    miou = (out / "miou.csv").read_text()

    # cut the model jobs another way: every image has its result, so nothing runs at all
    for model_jobs in ("{images: 2}", "{images: 4}", "{sized_for: cpu}"):
        again = smk(repo_copy, *base, f"model_jobs={model_jobs}")
        assert "Nothing to be done" in again.stdout + again.stderr, (model_jobs, planned(again))
        assert work.take() == NOTHING
    assert (out / "miou.csv").read_text() == miou

    # other shards too: no image is labelled, mapped or refined again (the per-shard confusion matrices are
    # recounted: they are the shards' own)
    recut = smk(repo_copy, "--cores", "2", "--config", model_config(tiny_model, batch_size=2), "shard_size=4")
    assert set(planned(recut)) <= {"evaluate_shard", "evaluate", "report_figures", "views", "all"}, planned(recut)
    assert work.take() == NOTHING
    assert (out / "miou.csv").read_text() == miou

"""Reruns recompute exactly what changed, image by image: real snakemake runs with the tiny BLIP and the
local fake OpenAI server. What went through each stage is read from the jobs' ``computed <id>`` log lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pnp_ovss.datasets.folder import Demo, demo_root
from pnp_ovss.ordering import faithful_order
from pnp_ovss.store import read_image_maps
from pnp_ovss.plan import make_plan
from support.worklog import STAGES, WorkLog
from support.openai_server import SECRET_KEY, FakeOpenAIServer
from support import model_config, planned, smk

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

DEMO = sorted(p.stem for p in (demo_root() / "images").iterdir())


def nothing_planned(proc) -> bool:
    return "Nothing to be done" in proc.stdout + proc.stderr


# --- a folder of photos: add, replace, remove ------------------------------------------------------


def copy_demo(dst: Path, names) -> None:
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "annotations").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(demo_root() / "images" / f"{name}.png", dst / "images" / f"{name}.png")
        shutil.copy(demo_root() / "annotations" / f"{name}.png", dst / "annotations" / f"{name}.png")


def folder_args(data: Path, model: Path) -> tuple:
    classes = ",".join((demo_root() / "classes.txt").read_text().split())
    return (
        "--cores", "2", "--config", "dataset=folder", f"images={data / 'images'}",
        f"annotations={data / 'annotations'}", f"classes={classes}", "mode=clean", "shard_size=2",
        model_config(model, batch_size=2),
    )


def run_masks(out: Path) -> dict[str, Path]:
    """The masks of the current run, by image name (refine/<hash>/set-<key>/<id>.png)."""
    views = list(out.glob("refine/*/set-*"))
    assert len(views) == 1, views  # earlier image sets' folders are gone
    return {p.stem: p for p in views[0].glob("*.png")}


def test_folder_run_follows_added_replaced_and_removed_photos(repo_copy, tmp_path, tiny_model):
    data = tmp_path / "photos"
    first, added = DEMO[:5], DEMO[5]
    copy_demo(data, first)
    args = folder_args(data, tiny_model)
    out = repo_copy / "results" / "folder"
    work = WorkLog(repo_copy / "results")
    smk(repo_copy, *args)
    assert work.take() == {stage: first for stage in STAGES}

    # a new photo: exactly it is labelled, mapped and refined
    copy_demo(data, [added])
    smk(repo_copy, *args)
    assert work.take() == {stage: [added] for stage in STAGES}
    assert sorted(run_masks(out)) == DEMO
    assert pd.read_csv(out / "miou.csv")["n_images"].tolist() == [6]

    # another photo's pixels replaced: exactly it, and its mask is the new one
    victim = first[0]
    old_mask_inode = run_masks(out)[victim].stat().st_ino
    pixels = np.asarray(Image.open(data / "images" / f"{victim}.png").convert("RGB")).copy()
    pixels[: pixels.shape[0] // 2] = 255 - pixels[: pixels.shape[0] // 2]
    Image.fromarray(pixels).save(data / "images" / f"{victim}.png")
    smk(repo_copy, *args)
    assert work.take() == {stage: [victim] for stage in STAGES}
    assert run_masks(out)[victim].stat().st_ino != old_mask_inode  # a link to the newly computed map

    # a photo removed: nothing computed, and it is gone from the masks and the tables
    gone = first[1]
    (data / "images" / f"{gone}.png").unlink()
    (data / "annotations" / f"{gone}.png").unlink()
    smk(repo_copy, *args)
    assert work.take() == {stage: [] for stage in STAGES}
    assert sorted(run_masks(out)) == sorted(set(DEMO) - {gone})
    table = pd.read_csv(out / "miou.csv")
    assert table["n_images"].tolist() == [5] and len(table) == 1
    reports = list(out.glob("report/*/set-*"))
    assert len(reports) == 1 and gone not in {p.stem for p in reports[0].glob("overlays/*.png")}

    # nothing changed: nothing planned
    assert nothing_planned(smk(repo_copy, "-n", *args))


# --- a benchmark with live GPT-4o labels: limit, shard_size, a kill ---------------------------------


def test_benchmark_limit_shard_size_and_kill_never_ask_or_compute_an_image_twice(repo_copy, mini_tree, tiny_model):
    root, ids = mini_tree
    assert len(ids["voc"]) == 4
    server = FakeOpenAIServer().start()
    env = {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": server.base_url}

    def args(limit, shard_size, **gradcam):
        return ("--cores", "2", "--config", "dataset=voc", f"data_root={root}", f"limit={limit}",
                f"shard_size={shard_size}", "labels={source: gpt4o, timeout: 5, max_retries: 0}",
                model_config(tiny_model, batch_size=2, **gradcam))

    out = repo_copy / "results" / "voc"
    work = WorkLog(repo_copy / "results")
    try:
        smk(repo_copy, *args(2, 2), env=env)
        first = work.take()
        assert len(server.image_payloads()) == 2 and len(first["gradcam"]) == 2

        # twice the images: exactly the new ones are asked and go through the model
        smk(repo_copy, *args(4, 2), env=env)
        second = work.take()
        assert len(server.image_payloads()) == 4 and len(set(server.image_payloads())) == 4
        assert len(second["gradcam"]) == 2 and not set(second["gradcam"]) & set(first["gradcam"])
        assert second["labels"] == second["gradcam"] == second["refine"]
        table = pd.read_csv(out / "miou.csv")
        assert table["n_images"].tolist() == [4]

        # another shard layout: no request, no image through the model or refine, the same tables
        plan = planned(smk(repo_copy, "-n", *args(4, 4), env=env))
        assert not {"labels", "gradcam", "refine"} & plan.keys()
        smk(repo_copy, *args(4, 4), env=env)
        assert work.take() == {stage: [] for stage in STAGES} and len(server.image_payloads()) == 4
        assert pd.read_csv(out / "miou.csv").equals(table)

        # another head, the gradcam job killed after its first batch, then rerun: every image through the
        # model exactly once, nothing asked again
        killed = smk(repo_copy, *args(4, 4, head=3), env={**env, "PNP_OVSS_FAULT": "gradcam:2:kill"}, check=False)
        assert killed.returncode != 0
        before_kill = work.take()
        assert len(before_kill["gradcam"]) == 2
        smk(repo_copy, *args(4, 4, head=3), env=env)
        rerun = work.take()
        assert sorted(before_kill["gradcam"] + rerun["gradcam"]) == sorted(ids["voc"])
        assert before_kill["labels"] == rerun["labels"] == []
        assert len(server.image_payloads()) == 4
        assert nothing_planned(smk(repo_copy, "-n", *args(4, 4, head=3), env=env))
    finally:
        server.stop()


# --- faithful batches ---------------------------------------------------------------------------------


def test_faithful_limit_that_cuts_a_batch_recomputes_that_batch_only(repo_copy, tiny_model):
    def args(*extra):
        return ("--cores", "2", "--config", model_config(tiny_model, batch_size=2), "shard_size=2", *extra)

    order = faithful_order(Demo().image_ids())  # batches of 2: [0 1] [2 3] [4 5]
    work = WorkLog(repo_copy / "results")
    smk(repo_copy, *args())
    assert work.take()["gradcam"] == DEMO
    smk(repo_copy, *args("limit=5"))  # the last batch loses order[5]: order[4] is in another batch now
    assert work.take() == {"labels": [], "gradcam": [order[4]], "refine": [order[4]]}

    # the kept and the recomputed maps equal those of a run from scratch
    smk(repo_copy, *args("limit=5", "results=scratch"))
    cfg = {"gradcam": {"model": str(tiny_model), "device": "cpu", "batch_size": 2}, "shard_size": 2, "limit": 5}
    plans = [make_plan({**cfg, "results": str(repo_copy / folder)}) for folder in ("results", "scratch")]
    gh = plans[0].runs[0].gradcam
    for image_id in order[:5]:
        stores = [Path(p.stage_dir("gradcam", gh)) / "images" / f"{p.image_key(gh, image_id)}.zarr" for p in plans]
        kept, scratch = (read_image_maps(s, image_id) for s in stores)
        assert np.array_equal(kept.maps, scratch.maps) and np.array_equal(kept.dropped, scratch.dropped)

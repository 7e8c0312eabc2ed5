"""Real snakemake runs with the BridgeTower backend (tiny random checkpoint): the demo end to end with
``backend: auto`` read from the checkpoint, a rerun that plans nothing, and a fabricated benchmark from the
authors' GPT-4o answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from support import GPT4O_DIR as SHARED_GPT4O, model_config, smk

from pnp_ovss.datasets.folder import demo_root

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def bt_demo(tmp_path_factory, tiny_bridgetower):
    from support import copy_workflow

    wf = copy_workflow(tmp_path_factory.mktemp("bt_demo_wf"))
    args = ("--cores", "2", "--config", model_config(tiny_bridgetower, backend="auto"))
    smk(wf, *args)
    return wf, args


def test_demo_with_bridgetower_end_to_end(bt_demo):
    wf, _ = bt_demo
    out = wf / "results" / "demo"
    row = pd.read_csv(out / "miou.csv").iloc[0]
    assert row["gradcam.backend"] == "bridgetower" and row["n_images"] == 6 and 0 <= row["mIoU"] <= 100
    assert (row["gradcam.layer"], row["gradcam.head"], row["refine.threshold"]) == (4, 0, 0.15)
    assert row["gradcam.exclude_sep_rows"] and row["gradcam.mean_last_class"]  # the clean rules, mode faithful
    masks = list((out / "refine").glob("*/set-*/*.png"))
    assert sorted(p.stem for p in masks) == sorted(p.stem for p in (demo_root() / "images").iterdir())
    import zarr

    from pnp_ovss.store import read_image_maps

    store = next(out.glob("gradcam/*/images/*.zarr"))
    (image_id,) = list(zarr.open_group(str(store), mode="r").group_keys())
    item = read_image_maps(store, image_id)
    assert item.attrs["backend"] == "bridgetower" and item.maps.shape[2:] == (21, 21)


def test_bridgetower_rerun_plans_nothing(bt_demo):
    wf, args = bt_demo
    proc = smk(wf, "-n", *args)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.skipif(not SHARED_GPT4O.is_dir(), reason="../shared/data/gpt4o (the authors' answers) not present")
def test_fabricated_voc_with_bridgetower(repo_copy, mini_tree, tiny_bridgetower):
    root, ids = mini_tree
    answers = SHARED_GPT4O / "voc_classification_noboundary.json"
    smk(repo_copy, "--cores", "2", "--config", "dataset=voc", f"data_root={root}", f"labels={{file: {answers}}}",
        model_config(tiny_bridgetower, backend="bridgetower", batch_size=3))
    out = repo_copy / "results" / "voc"
    row = pd.read_csv(out / "miou.csv").iloc[0]
    assert row["n_images"] == len(ids["voc"]) and row["gradcam.backend"] == "bridgetower"
    labels = {e["image_id"]: e for e in (json.loads(p.read_text()) for p in out.glob("labels/*/images/*.json"))}
    masks = list(out.glob("refine/*/set-*/*.png"))
    assert len(masks) == len(ids["voc"])
    for m in masks:
        assert set(np.unique(np.asarray(Image.open(m)))) <= {0, *labels[m.stem]["selected"]}

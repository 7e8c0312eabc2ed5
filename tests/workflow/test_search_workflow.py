"""`snakemake search` for real on the demo (tiny random BLIP and BridgeTower, tiny random CLIP): the one-pass
maps, rewards.csv, best.yaml, the figures and the reward ↔ mIoU summary; a killed search resumes without
scoring a finished setting again; `--configfile best.yaml` runs the pipeline with the chosen setting."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml
from scipy.stats import spearmanr

from support import model_config, smk

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

GRID = "search={clip_model: %s, images: 4, layers: [7, 8], heads: [8, 9], thresholds: [0.15, 0.35]}"


def workflow_copy(tmp_path_factory, name):
    from support import copy_workflow

    return copy_workflow(tmp_path_factory.mktemp(name))


def search_dir(wf):
    (folder,) = list((wf / "results" / "demo" / "search").glob("*/score-*"))
    return folder


def scored(wf) -> list[tuple[int, int, float]]:
    text = "".join(p.read_text() for p in (wf / "results" / "demo" / "logs" / "search").glob("*/score-*.log"))
    return [(int(a), int(b), float(c)) for a, b, c in re.findall(r"scored layer (\d+) head (\d+) threshold ([\d.]+)", text)]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model, tiny_clip):
    wf = workflow_copy(tmp_path_factory, "search_wf")
    args = ("--cores", "2", "search", "--config", model_config(tiny_model), GRID % tiny_clip)
    smk(wf, *args)
    return wf, args


def test_search_writes_rewards_best_setting_figures_and_summary(searched, tiny_model):
    wf, _ = searched
    out = search_dir(wf)
    rewards = pd.read_csv(out / "rewards.csv")
    assert len(rewards) == 8 and set(rewards["layer"]) == {7, 8} and set(rewards["head"]) == {8, 9}
    assert set(rewards["threshold"]) == {0.15, 0.35} and (rewards["images"] == 4).all()
    assert rewards["reward"].between(0, 4 * 6).all()
    best = yaml.safe_load((out / "best.yaml").read_text())
    top = rewards.loc[rewards["reward"].idxmax()]
    assert best == {"gradcam": {"backend": "blip", "model": str(tiny_model), "layer": int(top["layer"]), "head": int(top["head"])},
                    "refine": {"threshold": float(top["threshold"])}}
    for fig in ("reward_heatmap.png", "reward_vs_threshold.png"):
        assert (out / fig).stat().st_size > 1000
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    assert summary["spearman_reward_miou"] == pytest.approx(spearmanr(rewards["reward"], rewards["mIoU"]).statistic)
    assert summary["best_miou"] == rewards["mIoU"].max() and summary["miou_of_reward_choice"] == top["mIoU"]
    # the maps come from one pass per batch: one store per image with every searched (layer, head)
    stores = list((wf / "results" / "demo" / "search").glob("*/images/*.zarr"))
    assert len(stores) == 4
    assert sorted(scored(wf)) == sorted(zip(rewards["layer"], rewards["head"], rewards["threshold"]))


def test_search_rerun_plans_nothing(searched):
    wf, args = searched
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(smk(wf, "-n", *args))


def test_best_yaml_runs_the_pipeline_with_the_chosen_setting(searched, tiny_model):
    wf, _ = searched
    best = search_dir(wf) / "best.yaml"
    chosen = yaml.safe_load(best.read_text())
    setting = (chosen["gradcam"]["layer"], chosen["gradcam"]["head"], chosen["refine"]["threshold"])
    assert setting != (8, 9, 0.15)  # not the defaults, so the row below can only come from best.yaml
    # --config gradcam={model: ..} is merged key by key with the config file's gradcam section
    smk(wf, "--cores", "2", "--configfile", str(best), "--config", model_config(tiny_model))
    row = pd.read_csv(wf / "results" / "demo" / "miou.csv").iloc[0]
    assert (row["gradcam.layer"], row["gradcam.head"], row["refine.threshold"]) == (
        chosen["gradcam"]["layer"], chosen["gradcam"]["head"], chosen["refine"]["threshold"])


def test_killed_search_resumes_without_scoring_a_setting_twice(tmp_path_factory, tiny_model, tiny_clip):
    wf = workflow_copy(tmp_path_factory, "search_kill")
    args = ("--cores", "2", "search", "--config", model_config(tiny_model), GRID % tiny_clip)
    killed = smk(wf, *args, env={"PNP_OVSS_FAULT": "search:3:kill"}, check=False)
    assert killed.returncode != 0
    before = scored(wf)
    assert len(before) == 3
    smk(wf, "--unlock")
    smk(wf, *args)
    after = scored(wf)
    new = after[len(before):] if after[: len(before)] == before else after
    assert sorted(before + new) == sorted(set(before + new)) and len(before + new) == 8  # each setting once
    assert len(pd.read_csv(search_dir(wf) / "rewards.csv")) == 8


def test_search_with_the_bridgetower_backend(tmp_path_factory, tiny_bridgetower, tiny_clip):
    wf = workflow_copy(tmp_path_factory, "search_bt")
    smk(wf, "--cores", "2", "search", "--config", model_config(tiny_bridgetower, backend="bridgetower"),
        "search={clip_model: %s, images: 3, layers: [3, 4], heads: [0, 5], thresholds: [0.25], miou: false}" % tiny_clip)
    out = search_dir(wf)
    rewards = pd.read_csv(out / "rewards.csv")
    assert len(rewards) == 4 and "mIoU" not in rewards
    assert yaml.safe_load((out / "best.yaml").read_text())["gradcam"]["backend"] == "bridgetower"

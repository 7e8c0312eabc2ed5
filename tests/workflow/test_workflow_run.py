"""Real snakemake runs of the whole workflow on tiny data with a tiny random BLIP: end to end, reruns of
only what a parameter change affects, sweeps, the report, and kill/resume of jobs and of snakemake."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from support import GPT4O_DIR, SNAKEMAKE, model_config, planned, smk
from pnp_ovss.datasets.folder import demo_root

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

DEMO_IDS = [p.stem for p in (demo_root() / "images").iterdir()]


# --- the demo: end to end, reruns, report ------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny_model):
    from support import copy_workflow

    wf = copy_workflow(tmp_path_factory.mktemp("demo_wf"))
    smk(wf, "--cores", "2", "--config", model_config(tiny_model))
    return wf


def test_demo_end_to_end_writes_masks_tables_and_report_figures(demo_run):
    out = demo_run / "results" / "demo"
    table = pd.read_csv(out / "miou.csv")
    assert len(table) == 1
    row = table.iloc[0]
    assert row["dataset"] == "demo" and row["n_images"] == 6 and row["n_skipped"] == 0
    assert 0 <= row["mIoU"] <= 100 and row["labels.source"] == "ground_truth" and row["refine.threshold"] == 0.15
    masks = list((out / "refine").glob("*/set-*/*.png"))
    assert sorted(p.stem for p in masks) == sorted(p.stem for p in (demo_root() / "images").iterdir())
    with Image.open(masks[0]) as im:
        assert im.mode == "P" and im.size == (320, 240)
    per_class = pd.read_csv(next(out.glob("evaluate/*/set-*/per_class_iou.csv")))
    assert per_class["scored"].sum() == 6
    report = next(out.glob("report/*/set-*"))
    assert (report / "per_class_iou.png").is_file() and len(list((report / "overlays").glob("*.png"))) == 6
    # every stage folder records its parameters
    for stage in ("labels", "gradcam", "refine", "evaluate"):
        assert len(list((out / stage).glob("*/params.yaml"))) == 1


def test_rerun_with_nothing_changed_does_nothing(demo_run, tiny_model):
    proc = smk(demo_run, "-n", "--cores", "2", "--config", model_config(tiny_model))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_refine_change_reruns_only_refine_and_evaluate_and_changing_back_recomputes_nothing(demo_run, tiny_model):
    changed = ("--config", model_config(tiny_model), "refine={threshold: 0.3}")
    plan = planned(smk(demo_run, "-n", "--cores", "2", *changed))
    assert plan.keys() <= {"refine", "evaluate_shard", "evaluate", "masks", "views", "report_figures", "all"}
    assert plan["refine"] == 1 and plan["evaluate"] == 1
    smk(demo_run, "--cores", "2", *changed)
    assert pd.read_csv(demo_run / "results" / "demo" / "miou.csv")["refine.threshold"].tolist() == [0.3]
    # back to the default: every stage output exists already, only the views (latest/, miou.csv) are rebuilt
    plan = planned(smk(demo_run, "-n", "--cores", "2", "--config", model_config(tiny_model)))
    assert plan.keys() == {"views", "all"}
    smk(demo_run, "--cores", "2", "--config", model_config(tiny_model))
    out = demo_run / "results" / "demo"
    assert pd.read_csv(out / "miou.csv")["refine.threshold"].tolist() == [0.15]
    # the ledger keeps both runs; latest/ holds the current run's masks by image name
    assert sorted(pd.read_csv(out / "runs.csv")["refine.threshold"]) == [0.15, 0.3]
    assert sorted(p.stem for p in (out / "latest").glob("*.png")) == sorted(DEMO_IDS)
    latest = pd.read_csv(out / "latest" / "parameters.csv").set_index("parameter")["value"]
    assert latest["refine.threshold"] == "0.15"


def test_sweep_of_three_thresholds_gives_three_rows_from_one_gradcam(demo_run, tiny_model):
    sweep = ("--config", model_config(tiny_model), "refine={threshold: [0.1, 0.15, 0.3]}")
    plan = planned(smk(demo_run, "-n", "--cores", "2", *sweep))
    assert "gradcam" not in plan and plan.get("refine") == 1  # 0.15 and 0.3 exist already
    smk(demo_run, "--cores", "2", *sweep)
    table = pd.read_csv(demo_run / "results" / "demo" / "miou.csv")
    assert sorted(table["refine.threshold"]) == [0.1, 0.15, 0.3]
    assert table["gradcam.hash"].nunique() == 1 and table["refine.hash"].nunique() == 3
    latest = demo_run / "results" / "demo" / "latest"
    assert sorted(p.name for p in latest.iterdir() if p.is_dir()) == ["threshold=0.1", "threshold=0.15", "threshold=0.3"]
    assert all(len(list((latest / d).glob("*.png"))) == 6 for d in ("threshold=0.1", "threshold=0.3"))
    # a row per run evaluated so far, each once (0.15 and 0.3 were evaluated before)
    assert sorted(pd.read_csv(demo_run / "results" / "demo" / "runs.csv")["refine.threshold"]) == [0.1, 0.15, 0.3]


def test_folder_without_annotations_gets_masks_by_name_and_a_prediction_report(repo_copy, tiny_model):
    classes = ",".join((demo_root() / "classes.txt").read_text().split())
    args = ("--cores", "2", "--config", "dataset=folder", f"images={demo_root() / 'images'}", f"classes={classes}",
            model_config(tiny_model))
    proc = smk(repo_copy, *args)
    out = repo_copy / "results" / "folder"
    assert sorted(p.stem for p in (out / "latest").glob("*.png")) == sorted(DEMO_IDS)
    assert not (out / "miou.csv").exists()  # nothing to score against, and the end of the run says so
    said = proc.stdout + proc.stderr
    assert "pnp-ovss: no miou.csv: this folder run has no ground truth to score against" in said
    assert "pnp-ovss: masks by image name in results/folder/latest/" in said
    assert "%|" not in said  # no progress bars where stderr is not a terminal
    again = smk(repo_copy, "-n", *args)
    assert "Nothing to be done" in again.stdout + again.stderr  # a rerun plans nothing
    overlays = list(out.glob("report/*/set-*/overlays/*.png"))
    assert sorted(p.stem for p in overlays) == sorted(DEMO_IDS)
    with Image.open(overlays[0]) as im:  # the prediction panel only: as wide as the image
        assert im.size[0] == 320
    smk(repo_copy, "--cores", "1", *args[2:], "--report", "report.html")
    html = (repo_copy / "report.html").read_text(errors="replace")
    assert "lake.png" in html and "parameters.csv" in html


def test_report_of_the_last_run_needs_no_retyped_overrides(demo_run):
    # the last run was the three-threshold sweep with the tiny model: no --config here
    last = demo_run / "results" / "last-run.yaml"
    assert "snakemake --report report.html --configfile" in last.read_text()
    smk(demo_run, "--cores", "1", "--report", "last.html", "--configfile", str(last))
    html = (demo_run / "last.html").read_text(errors="replace")
    assert "per_class_iou.png" in html and "lake.png" in html


def test_report_html_contains_the_overlays(demo_run, tiny_model):
    smk(demo_run, "--cores", "1", "--config", model_config(tiny_model), "--report", "report.html")
    html = (demo_run / "report.html").read_text(errors="replace")
    for name in ("lake.png", "beach.png", "per_class_iou.png", "parameters.csv", "miou.csv"):
        assert name in html


# --- kill and resume ------------------------------------------------------------------------------


def folder_workflow(tmp_path, repo_copy_src) -> Path:
    """12 images (the demo twice) as a folder dataset, ground truth included."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "annotations").mkdir()
    for k in range(2):
        for p in (demo_root() / "images").iterdir():
            shutil.copy(p, data / "images" / f"{p.stem}{k}.png")
            shutil.copy(demo_root() / "annotations" / p.name, data / "annotations" / f"{p.stem}{k}.png")
    return data


def folder_args(data, tiny_model):
    classes = (demo_root() / "classes.txt").read_text().split()
    return (
        "--cores", "2", "--config", "dataset=folder", f"images={data / 'images'}", f"annotations={data / 'annotations'}",
        f"classes={','.join(classes)}", "labels={source: ground_truth}", "shard_size=6",
        model_config(tiny_model, batch_size=1),
    )


def gradcam_logs(results: Path) -> dict[Path, str]:
    return {p: p.read_text() for p in results.glob("folder/logs/gradcam/*/*.log")}


def gradcam_computations(*snapshots: dict[Path, str]) -> list[str]:
    """Images that went through the model, over log snapshots taken before and after a rerun (a rerun
    job starts its log afresh; a log left unchanged is counted once)."""
    texts = []
    for snap in snapshots:
        for path, text in snap.items():
            if text not in texts:
                texts.append(text)
    return re.findall(r"computed (\S+)", "".join(texts))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model):
    from support import copy_workflow

    tmp = tmp_path_factory.mktemp("uninterrupted")
    wf = copy_workflow(tmp / "wf")
    data = folder_workflow(tmp, wf)
    smk(wf, *folder_args(data, tiny_model))
    return pd.read_csv(wf / "results" / "folder" / "miou.csv"), gradcam_computations(gradcam_logs(wf / "results"))


def _compare(table, reference):
    assert table.equals(reference), f"{table.T}\n{reference.T}"


@pytest.mark.parametrize("stage", ["gradcam", "refine"])
def test_killed_job_resumes_to_the_same_tables_without_recomputing(repo_copy, tmp_path, tiny_model, uninterrupted, stage):
    reference, reference_computed = uninterrupted
    data = folder_workflow(tmp_path, repo_copy)
    args = folder_args(data, tiny_model)
    killed = smk(repo_copy, *args, env={"PNP_OVSS_FAULT": f"{stage}:2:kill"}, check=False)
    assert killed.returncode != 0
    results = repo_copy / "results" / "folder"
    logs_before = gradcam_logs(repo_copy / "results")
    # the killed job's declared output is gone (Snakemake deleted it) but its finished images are kept
    if stage == "gradcam":
        kept = len(list(results.glob("gradcam/*/images/*.zarr")))
    else:
        kept = len(list(results.glob("refine/*/images/*.png")))
    assert kept >= 2
    smk(repo_copy, *args)
    _compare(pd.read_csv(results / "miou.csv"), reference)
    computed = gradcam_computations(logs_before, gradcam_logs(repo_copy / "results"))
    assert sorted(computed) == sorted(reference_computed)  # no image went through the model twice
    if stage == "refine":
        logs = "".join(p.read_text() for p in results.glob("logs/refine/*/*.log"))
        assert sum(int(n) for n in re.findall(r"refined (\d+) images", logs)) == 12 - kept  # kept maps not redone


def test_killed_snakemake_resumes_after_unlock(repo_copy, tmp_path, tiny_model, uninterrupted):
    reference, reference_computed = uninterrupted
    data = folder_workflow(tmp_path, repo_copy)
    args = folder_args(data, tiny_model)
    env = {**os.environ, "PNP_OVSS_FAULT": "gradcam:2:sleep"}
    proc = subprocess.Popen(SNAKEMAKE + list(args), cwd=repo_copy, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = repo_copy / "results" / "folder"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            # published stores only: an image's store is written under a hidden temporary name and renamed,
            # and pathlib's glob also matches hidden names (counting one killed the job mid-image)
            stores = [p for p in results.glob("gradcam/*/images/*.zarr") if not p.name.startswith(".")]
            if len(stores) >= 2:
                break
            assert proc.poll() is None, "snakemake ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("the gradcam job never reached its second image")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its running job
        proc.wait()
    logs_before = gradcam_logs(repo_copy / "results")
    smk(repo_copy, "--unlock")
    smk(repo_copy, *args)
    _compare(pd.read_csv(results / "miou.csv"), reference)
    computed = gradcam_computations(logs_before, gradcam_logs(repo_copy / "results"))
    assert sorted(computed) == sorted(reference_computed)


def test_unreadable_image_is_skipped_and_counted(repo_copy, tmp_path, tiny_model):
    data = folder_workflow(tmp_path, repo_copy)
    broken = data / "images" / "lake0.png"
    broken.write_bytes(broken.read_bytes()[:200])
    args = folder_args(data, tiny_model)
    failed = smk(repo_copy, *args, check=False)
    assert failed.returncode != 0
    # the end of the console says why, in one line per failed job, and what to do
    tail = "\n".join(failed.stderr.splitlines()[-8:])
    assert "pnp-ovss: why the run stopped" in tail and "lake0.png: unreadable or truncated image" in tail
    assert "--config on_error=skip" in tail
    skipping = smk(repo_copy, *args, "on_error=skip")
    assert "pnp-ovss: 1 image(s) skipped" in skipping.stdout + skipping.stderr
    assert "folder/latest/skipped.csv" in skipping.stdout + skipping.stderr
    row = pd.read_csv(repo_copy / "results" / "folder" / "miou.csv").iloc[0]
    assert row["n_skipped"] == 1 and row["n_images"] == 11
    skipped = pd.read_csv(next((repo_copy / "results" / "folder").glob("evaluate/*/set-*/skipped.csv")))
    assert skipped["image_id"].tolist() == ["lake0"]


def test_offline_missing_model_ends_with_its_advice(repo_copy):
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    failed = smk(repo_copy, "--cores", "1", "--config", "gradcam={model: pnp-ovss-tests/no-such-blip, device: cpu}",
                 env=env, check=False)
    assert failed.returncode != 0
    tail = "\n".join(failed.stderr.splitlines()[-8:])
    # refused before the first job (issue 18), not after the job's HF retries
    assert "gradcam.model pnp-ovss-tests/no-such-blip is not in the Hugging Face cache" in tail
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in tail
    assert "hf download pnp-ovss-tests/no-such-blip" in tail
    assert not (repo_copy / "results" / "demo" / "logs").exists()


# --- the five benchmarks, labelled from the authors' GPT-4o files ---------------------------------------

SHARED_GPT4O = GPT4O_DIR


@pytest.mark.skipif(not SHARED_GPT4O.is_dir(), reason="../shared/data/gpt4o (the authors' answers) not present")
@pytest.mark.parametrize(
    "dataset,protocol",
    [("voc", "pnp"), ("psc", "mmseg"), ("ade20k", "pnp"), ("coco_object", "pnp"), ("coco_stuff", "mmseg")],
)
def test_benchmark_runs_end_to_end_from_the_authors_answers(repo_copy, mini_tree, tiny_model, dataset, protocol):
    root, ids = mini_tree
    answers = SHARED_GPT4O / f"{dataset}_classification_noboundary.json"
    smk(repo_copy, "--cores", "2", "--config", f"dataset={dataset}", f"data_root={root}", f"protocol={protocol}",
        f"labels={{file: {answers}}}", model_config(tiny_model))
    out = repo_copy / "results" / dataset
    row = pd.read_csv(out / "miou.csv").iloc[0]
    assert row["n_images"] == len(ids[dataset]) and row["n_skipped"] == 0 and row["protocol"] == protocol
    assert row["labels.source"] == "gpt4o_file"
    labels = {e["image_id"]: e for e in (json.loads(p.read_text()) for p in out.glob("labels/*/images/*.json"))}
    from pnp_ovss.labels.parser import parse_answer
    from pnp_ovss.vocab import load_vocabulary

    raw = json.loads(answers.read_text())
    vocab = load_vocabulary(dataset)
    for image_id, entry in labels.items():
        key = f"{int(image_id):012d}" if dataset.startswith("coco") else image_id
        assert entry["selected"] == parse_answer(raw[key], dataset, vocab, "faithful").selected
    masks = list(out.glob("refine/*/set-*/*.png"))
    assert len(masks) == len(ids[dataset])
    for m in masks:  # every predicted id is background or one of the image's selected classes
        assert set(np.unique(np.asarray(Image.open(m)))) <= {0, *labels[m.stem]["selected"]}

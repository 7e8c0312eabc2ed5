"""The real snakemake CLI on the workflow: lint, and a dry run for each benchmark on a fabricated tree."""

import re
import tomllib

import pytest
import yaml

from support import ROOT, smk


def run(args, cwd, check=True):
    return smk(cwd, *args, check=check, timeout=600)


def job_counts(stdout: str) -> dict[str, int]:
    block = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


pytestmark = pytest.mark.workflow


def test_lint_is_clean(repo_copy):
    proc = run(["--lint"], repo_copy)
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


@pytest.mark.parametrize("dataset", ["voc", "psc", "ade20k", "coco_object", "coco_stuff"])
def test_dry_run_plans_the_full_dag(repo_copy, mini_tree, dataset):
    root, ids = mini_tree
    proc = run(["-n", "--cores", "2", "--config", f"dataset={dataset}", f"data_root={root}", "shard_size=3",
                "gradcam={batch_size: 3}"], repo_copy)
    counts = job_counts(proc.stdout)
    shards = -(-len(ids[dataset]) // 3)
    assert counts["labels"] == counts["gradcam"] == counts["refine"] == counts["evaluate_shard"] == shards
    assert counts["evaluate"] == counts["report_figures"] == counts["views"] == 1


def test_sweep_over_three_thresholds_plans_three_branches(repo_copy):
    proc = run(["-n", "--cores", "2", "--config", "refine={threshold: [0.1, 0.15, 0.2]}"], repo_copy)
    counts = job_counts(proc.stdout)
    assert counts["gradcam"] == 1 and counts["refine"] == 3 and counts["evaluate"] == 3 and counts["views"] == 1


def test_bad_config_value_is_refused_with_the_key(repo_copy):
    proc = run(["-n", "--cores", "1", "--config", "refine={postprocess: sharpen}"], repo_copy, check=False)
    assert proc.returncode != 0 and "sharpen" in proc.stdout + proc.stderr


def test_missing_dataset_is_a_clear_error(repo_copy, tmp_path):
    proc = run(["-n", "--cores", "1", "--config", "dataset=voc", f"data_root={tmp_path}"], repo_copy, check=False)
    assert proc.returncode != 0
    assert f"{tmp_path}/VOCdevkit/VOC2012: PASCAL VOC 2012 folder not found" in proc.stdout + proc.stderr
    assert "pnp-ovss prepare --dataset voc --downloads DIR" in proc.stdout + proc.stderr


def test_conda_env_lists_the_same_packages_as_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "pnp-ovss.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(deps)


@pytest.mark.parametrize(
    "override,words",
    [
        ("refine={threshold: -1}", ["refine.threshold", "-1 is less than the minimum of 0"]),
        ("refine={threshold: [0.1, 2]}", ["refine.threshold.1", "2 is greater than the maximum of 1"]),
        ("refine={crf_iterations: -3}", ["refine.crf_iterations", "minimum of 0"]),
        ("refine={bilateral_srgb: 0}", ["refine.bilateral_srgb", "less than or equal to the minimum of 0"]),
        ("gradcam={drop_iter: 0}", ["gradcam.drop_iter", "minimum of 1"]),
        ("labels={min_probability: 120}", ["labels.min_probability", "maximum of 100"]),
        ("shard_size=0", ["shard_size", "minimum of 1"]),
    ],
)
def test_out_of_range_values_stop_the_parse_with_the_key(repo_copy, override, words):
    proc = run(["-n", "--cores", "1", "--config", override], repo_copy, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and all(w in out for w in words), out[-2000:]
    assert not (repo_copy / "results" / "demo" / "logs").exists()  # no job started


def test_model_directory_and_image_size_are_checked_before_any_job(repo_copy, tiny_model, tmp_path):
    missing = run(["-n", "--cores", "1", "--config", "gradcam={model: ./no-such-blip}"], repo_copy, check=False)
    out = missing.stdout + missing.stderr
    assert missing.returncode != 0 and "no-such-blip: gradcam.model is not an existing directory" in out
    assert "pnp-ovss tiny-model ./no-such-blip" in out and "hf download" not in out
    empty = tmp_path / "empty-model"
    empty.mkdir()
    proc = run(["-n", "--cores", "1", "--config", f"gradcam={{model: {empty}}}"], repo_copy, check=False)
    assert proc.returncode != 0 and "without config.json" in proc.stdout + proc.stderr
    proc = run(["-n", "--cores", "1", "--config", f"gradcam={{model: {tiny_model}, image_size: 330}}"], repo_copy,
               check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "image_size 330 is not a multiple of the patch size 16" in out and "336" in out
    run(["-n", "--cores", "1", "--config", f"gradcam={{model: {tiny_model}, image_size: 336}}"], repo_copy)


def test_an_empty_class_name_is_refused(repo_copy, tmp_path):
    proc = run(["-n", "--cores", "1", "--config", "dataset=folder", f"images={tmp_path}", "classes=person,,flag"],
               repo_copy, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "name 2 of 3 in 'person,,flag' is empty" in out


def test_class_names_unknown_to_the_tokenizer_are_named_at_parse(repo_copy, tiny_model, tmp_path):
    from pnp_ovss.datasets.folder import demo_root

    proc = run(["-n", "--cores", "1", "--config", "dataset=folder", f"images={demo_root() / 'images'}",
                "classes=sky,キツネ", f"gradcam={{model: {tiny_model}}}"], repo_copy)
    out = proc.stdout + proc.stderr
    assert "class 'キツネ': every word piece is unknown to the tokenizer" in out and "'[UNK]'" in out
    assert "class 'sky'" not in out

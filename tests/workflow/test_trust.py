"""Cached results verified before reuse and views that cannot go stale (issue 18), with the real snakemake
on the demo and the tiny BLIP: damaged or deleted entries recomputed (exactly that image, the parse line
agreeing with the jobs), copies of results folders showing the config asked for, views edited by hand
rebuilt without touching the cache."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pnp_ovss.entries import check_entry, check_view, seal, seal_path, set_aside, write_sealed_bytes

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


# --- seals (unit) --------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncate", "delete-file", "add-file"])
def test_a_sealed_store_is_refused_once_any_of_its_files_changes(tmp_path, damage):
    store = tmp_path / "x.zarr"
    (store / "a" / "c").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    (store / "a" / "c" / "0").write_bytes(b"\x01" * 100)
    seal(store, store, upstream="u1")
    assert check_entry("gradcam", store, "u1")[0] is None
    chunk = store / "a" / "c" / "0"
    if damage == "garbage":
        chunk.write_bytes(b"\x02" * 100)  # same size, other bytes: found by the re-hash of a changed mtime
    elif damage == "truncate":
        chunk.write_bytes(b"\x01" * 20)
    elif damage == "delete-file":
        chunk.unlink()
    else:
        (store / "extra").write_text("?")
    problem, digest = check_entry("gradcam", store, "u1")
    assert problem and digest is None


def test_a_copy_with_new_mtimes_stays_valid_and_another_upstream_is_refused(tmp_path):
    entry = tmp_path / "a.png"
    write_sealed_bytes(entry, b"png bytes", upstream="gradcam-digest")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(entry, copy / "a.png")  # a plain cp: new mtime, same bytes
    shutil.copy(seal_path(entry), seal_path(copy / "a.png"))
    assert check_entry("refine", copy / "a.png", "gradcam-digest")[0] is None
    problem, _ = check_entry("refine", copy / "a.png", "another-digest")
    assert "recomputed" in problem
    moved = set_aside(entry)
    assert not entry.exists() and moved.is_file() and moved.parent.name == "damaged"


def test_a_view_must_be_sealed_for_the_key_asked_for(tmp_path):
    view = tmp_path / "miou.csv"
    view.write_text("a\n")
    assert check_view(view, "k") == "not sealed"
    seal(view, view, "k")
    assert check_view(view, "k") is None
    assert check_view(view, "other") == "built for another configuration"
    view.write_text("b\n")
    assert "changed" in check_view(view, "k")
    assert check_view(tmp_path / "nothing", "k") == "missing"


# --- the workflow --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model):
    """A workflow copy with one finished demo run (results/), and the config arguments of that run."""
    from support import copy_workflow
    from support import smk

    wf = copy_workflow(tmp_path_factory.mktemp("trust_wf"))
    args = ("--config", f"gradcam={{model: {tiny_model}, device: cpu}}")
    smk(wf, "--cores", "2", *args)
    return wf, args


def run(wf, *args, dry=False):
    from support import smk

    proc = smk(wf, *(["-n"] if dry else []), "--cores", "2", *args)
    return proc, proc.stdout + proc.stderr


def to_compute(out: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(labels|gradcam|refine) \d+ reused / (\d+) to compute", out)}


def planned_jobs(out: str) -> dict[str, int]:
    from support import planned

    class P:
        stdout, stderr = out, ""

    return planned(P)


def stage_entries(wf, stage_folder: str, suffix: str) -> list[Path]:
    return sorted((wf / "results" / "demo" / stage_folder).glob(f"*/images/*{suffix}"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deleting_one_entry_of_each_stage_recomputes_exactly_that_image_and_what_is_below(demo):
    wf, args = demo
    out_dir = wf / "results" / "demo"
    before = {"latest": snapshot(out_dir / "latest"), "miou": (out_dir / "miou.csv").read_bytes()}
    labels, stores, masks = stage_entries(wf, "labels", ".json"), stage_entries(wf, "gradcam", ".zarr"), \
        stage_entries(wf, "refine", ".png")
    labels[0].unlink()
    shutil.rmtree(stores[1])
    masks[2].unlink()
    # the parse line and the plan agree: one image per stage, and the jobs that hold them
    _, out = run(wf, *args, dry=True)
    assert to_compute(out) == {"labels": 1, "gradcam": 1, "refine": 1}
    jobs = planned_jobs(out)
    assert jobs["labels"] == jobs["gradcam"] == jobs["refine"] == jobs["evaluate_shard"] == 1
    _, out = run(wf, *args)
    logs = out_dir / "logs"
    text = {stage: "".join(p.read_text() for p in (logs / stage).rglob("shard-*.log")) for stage in ("labels", "refine")}
    assert "labels shard-0000: 1 images computed, 5 reused" in text["labels"]
    assert "refine shard-0000: 1 images computed, 5 reused" in text["refine"]
    assert stores[1].is_dir() and masks[2].is_file() and labels[0].is_file()
    # the same results, byte for byte, and a rerun plans nothing
    assert snapshot(out_dir / "latest") == before["latest"] and (out_dir / "miou.csv").read_bytes() == before["miou"]
    _, out = run(wf, *args, dry=True)
    assert "Nothing to be done" in out and to_compute(out) == {"labels": 0, "gradcam": 0, "refine": 0}
    # the evaluation entry (a shard's confusion matrix): only it and the tables it feeds
    next((out_dir / "evaluate").glob("*/shards/*.npz")).unlink()
    _, out = run(wf, *args, dry=True)
    jobs = planned_jobs(out)
    assert jobs.get("evaluate_shard") == 1 and not {"labels", "gradcam", "refine"} & set(jobs)
    run(wf, *args)
    assert (out_dir / "miou.csv").read_bytes() == before["miou"]


def test_a_damaged_mask_or_store_is_set_aside_named_and_recomputed_never_copied_into_a_view(demo):
    wf, args = demo
    out_dir = wf / "results" / "demo"
    latest = snapshot(out_dir / "latest")
    mask = stage_entries(wf, "refine", ".png")[0]
    mask.write_bytes(b"garbage, not a PNG")
    store = stage_entries(wf, "gradcam", ".zarr")[3]
    chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and "/maps/c/" in p.as_posix())
    chunk.write_bytes(chunk.read_bytes()[:20])  # a truncated Zarr chunk
    _, out = run(wf, *args)
    assert f"{mask.relative_to(wf)} cannot be reused: the file is 18 bytes" in out
    assert f"{store.relative_to(wf)} cannot be reused: " in out and "is 20 bytes" in out
    assert "it is recomputed" in out
    assert (mask.parent.parent / "damaged" / mask.name).read_bytes() == b"garbage, not a PNG"
    assert snapshot(out_dir / "latest") == latest  # the recomputed masks, equal to the originals
    assert check_entry("refine", mask)[0] is None


def test_views_edited_or_deleted_by_hand_are_rebuilt_and_the_cache_is_untouched(demo):
    wf, args = demo
    out_dir = wf / "results" / "demo"
    latest = snapshot(out_dir / "latest")
    edited = sorted((out_dir / "latest").glob("*.png"))[0]
    edited.write_bytes(b"painted over in an image editor")
    view = next((out_dir / "refine").glob("*/set-*"))
    removed = sorted(view.glob("*.png"))[1]
    removed.unlink()
    assert all(check_entry("refine", p)[0] is None for p in stage_entries(wf, "refine", ".png"))  # copies, not links
    _, out = run(wf, *args)
    assert "results/demo/latest is rebuilt: " in out and f"{view.relative_to(wf)} is rebuilt" in out
    assert snapshot(out_dir / "latest") == latest and removed.is_file()
    _, out = run(wf, *args, dry=True)
    assert "Nothing to be done" in out


def test_a_copied_results_folder_without_snakemake_metadata_shows_the_config_asked_for(demo, tmp_path):
    """Run A, run B, copy the results folder, delete .snakemake/, ask for A on the copy: A's views, byte for
    byte as a fresh A, with only the views rebuilt."""
    wf, args = demo
    a = wf / "results"
    fresh_a = {"latest": snapshot(a / "demo" / "latest"), "miou": (a / "demo" / "miou.csv").read_bytes()}
    b_args = (*args, "refine={threshold: 0.3}")
    run(wf, *b_args)
    assert (a / "demo" / "miou.csv").read_bytes() != fresh_a["miou"]
    copy = tmp_path / "copied-results"
    shutil.copytree(a, copy, symlinks=True, copy_function=shutil.copy2)  # cp -a
    shutil.rmtree(wf / ".snakemake", ignore_errors=True)
    _, out = run(wf, *args, f"results={copy}", dry=True)
    assert planned_jobs(out) == {"views": 1, "all": 1}
    assert "latest is rebuilt: built for another configuration" in out
    _, out = run(wf, *args, f"results={copy}")
    assert f"pnp-ovss: scores in {copy}/demo/miou.csv" in out  # the end of a run names its outputs
    assert f"the report: snakemake --report report.html --configfile {copy}/last-run.yaml" in out
    assert snapshot(copy / "demo" / "latest") == fresh_a["latest"]
    assert (copy / "demo" / "miou.csv").read_bytes() == fresh_a["miou"]
    assert "threshold: 0.3" not in (copy / "last-run.yaml").read_text()
    # and back in the original folder, B's views are still B's until A is asked for
    assert (a / "demo" / "miou.csv").read_bytes() != fresh_a["miou"]


def test_results_from_before_the_folder_renaming_are_found_and_moved_once(demo):
    """masks/ and eval/ (the refine and evaluate folders' old names): a dry run reads them where they are and
    plans no stage work, writing nothing; the next run renames them and recomputes nothing."""
    wf, args = demo
    out_dir = wf / "results" / "demo"
    run(wf, *args)  # the views of this config (an earlier test may have left another's)
    before = {"latest": snapshot(out_dir / "latest"), "miou": (out_dir / "miou.csv").read_bytes()}
    (out_dir / "refine").rename(out_dir / "masks")
    (out_dir / "evaluate").rename(out_dir / "eval")
    listing = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*"))
    _, out = run(wf, *args, dry=True)
    assert "will be renamed refine/ by the next run" in out and "will be renamed evaluate/ by the next run" in out
    assert to_compute(out) == {"labels": 0, "gradcam": 0, "refine": 0}
    assert not {"labels", "gradcam", "refine", "evaluate_shard"} & set(planned_jobs(out))
    assert sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")) == listing
    _, out = run(wf, *args)
    assert "renamed refine/ (the refine stage's folder" in out
    assert not (out_dir / "masks").exists() and not (out_dir / "eval").exists()
    assert not {"labels", "gradcam", "refine", "evaluate_shard"} & set(planned_jobs(out))
    assert snapshot(out_dir / "latest") == before["latest"] and (out_dir / "miou.csv").read_bytes() == before["miou"]

"""A parse that only looks writes nothing under results/: the real `snakemake -n`, `--lint` and `--report` on the
tiny setup, before and after a run, with states in which a writing parse would write (memos to save, jobs with
no work and no record), and `-n` still lists the jobs the run then runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import planned, smk

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and mtime (ns)."""
    if not root.exists():
        return {}
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return out


def test_dry_run_lint_and_report_write_nothing_under_results(repo_copy, tiny_model):
    # clean mode: shards need not hold whole batches, so another shard_size gives other jobs
    config = ["--config", f"gradcam={{model: {tiny_model}, device: cpu}}", "mode=clean"]
    results = repo_copy / "results"

    # before any run: nothing is created, and -n lists what the run then runs
    dry = smk(repo_copy, "-n", "--cores", "2", *config)
    smk(repo_copy, "--lint", *config)
    assert not results.exists(), sorted(listing(results))
    run = smk(repo_copy, "--cores", "2", *config)
    assert planned(dry) == planned(run) and planned(run)["gradcam"] >= 1

    # states in which a parse that writes would write: memos to save, and (another shard_size: other job
    # names over the same per-image results) jobs with no work and no record
    out = results / "demo"
    memos = [out / ".headers.json", out / ".digests.json"]
    assert all(p.is_file() for p in memos)
    for p in memos:
        p.unlink()
    resharded = [*config, "shard_size=2"]
    before = listing(results)

    dry = smk(repo_copy, "-n", "--cores", "2", *resharded)
    assert listing(results) == before
    smk(repo_copy, "--lint", *resharded)
    assert listing(results) == before
    smk(repo_copy, "--report", str(repo_copy / "report.html"), *resharded)
    assert (repo_copy / "report.html").is_file()
    assert listing(results) == before

    # a run that writes saves the memos and records the new jobs, and runs what -n listed
    again = smk(repo_copy, "--cores", "2", *resharded)
    assert all(p.is_file() for p in memos)
    assert len(list((out / "labels").glob("*/jobs/*.json"))) == 1 + 3  # the first run's job, and three of 2 images
    assert planned(again) == planned(dry)
    assert not {"labels", "gradcam", "refine"} & set(planned(dry))  # no false work

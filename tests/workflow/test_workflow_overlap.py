"""GPU machines (issue #14): a gradcam job holds a few cores and the GPU resource, so refine of a finished shard
runs while gradcam works on the next one. Shown from Snakemake's own job start/end times in real runs on the
demo, with the model stage made slow (1 s per image, the test-only fault hook) as on a busy GPU.

`device: auto` is used: the default profile then gives gradcam jobs `gpu=1` (one at a time, as on one card)
while the job itself runs on this machine's CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime

import pytest

from support import copy_workflow, SNAKEMAKE

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

_START = re.compile(r"^\[(?P<when>[A-Z][a-z]{2} [A-Z][a-z]{2} +\d+ [\d:]+ \d{4})\]\n(?:local)?rule (?P<rule>\w+):\n(?P<body>(?:[ \t].*\n)*)", re.M)
_END = re.compile(r"^\[(?P<when>[A-Z][a-z]{2} [A-Z][a-z]{2} +\d+ [\d:]+ \d{4})\]\nFinished jobid: (?P<job>\d+) \(Rule: (?P<rule>\w+)\)", re.M)


def job_intervals(log: str) -> list[tuple[str, datetime, datetime]]:
    """(rule, start, end) of every finished job in Snakemake's console log."""
    def when(s):
        return datetime.strptime(" ".join(s.split()), "%a %b %d %H:%M:%S %Y")

    starts = {}
    for m in _START.finditer(log):
        job = re.search(r"jobid: (\d+)", m.group("body")).group(1)
        starts[job] = (m.group("rule"), when(m.group("when")))
    out = []
    for m in _END.finditer(log):
        if m.group("job") in starts:  # a start line interleaved with another job's output is not parsed
            rule, start = starts[m.group("job")]
            out.append((rule, start, when(m.group("when"))))
    return out


def overlapping(intervals, a: str, b: str) -> list[tuple]:
    """Pairs of an `a` job and a `b` job that ran at the same time (strictly: one ending in the second the
    other starts does not count)."""
    return [(x, y) for x in intervals if x[0] == a for y in intervals if y[0] == b
            if x is not y and x[1] < y[2] and y[1] < x[2]]


def run_demo(tmp_path, tiny_model, threads: str, *, slow: bool = True):
    wf = tmp_path / "wf"
    if not wf.exists():
        copy_workflow(wf)
    env = {k: v for k, v in os.environ.items() if k != "PNP_OVSS_FAULT"}
    if slow:
        env["PNP_OVSS_FAULT"] = "gradcam:1:slow"
    proc = subprocess.run(
        SNAKEMAKE + ["--cores", "2", "--config", "shard_size=2",
         f"gradcam={{model: {tiny_model}, device: auto, batch_size: 2, threads: {threads}}}"],
        cwd=wf, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return wf, proc


def test_refine_runs_beside_gradcam_when_gradcam_takes_one_core(tmp_path, tiny_model):
    wf, proc = run_demo(tmp_path, tiny_model, "1")
    intervals = job_intervals(proc.stderr)
    assert sum(1 for r, *_ in intervals if r == "gradcam") == 3
    pairs = overlapping(intervals, "refine", "gradcam")
    assert pairs, f"no refine job ran beside a gradcam job: {intervals}"
    # one gradcam at a time (the gpu resource), as on one card
    assert not overlapping(intervals, "gradcam", "gradcam")
    # the job used the threads it was given
    logs = list((wf / "results" / "demo" / "logs" / "gradcam").rglob("*.log"))
    assert logs and all("torch threads: 1" in p.read_text() for p in logs)
    # no result depends on the thread count: another value plans nothing
    rerun = subprocess.run(SNAKEMAKE + ["-n", "--cores", "2", "--config", "shard_size=2",
                            f"gradcam={{model: {tiny_model}, device: auto, batch_size: 2, threads: 2}}"],
                           cwd=wf, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr


def test_on_the_cpu_by_default_gradcam_holds_every_core(tmp_path, tiny_model):
    _, proc = run_demo(tmp_path, tiny_model, "null")
    intervals = job_intervals(proc.stderr)
    assert sum(1 for r, *_ in intervals if r == "refine") == 3
    assert not overlapping(intervals, "refine", "gradcam"), intervals

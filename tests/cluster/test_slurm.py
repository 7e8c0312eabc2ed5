"""The SLURM profile on a real (single-node, localhost) SLURM cluster.

Needs Debian's ``slurm-wlm`` and ``munge`` (``apt-get install slurm-wlm munge``; ``.ci/run`` installs them)
and root (slurmd launches jobs as their user). The cluster is built and torn down by
``tests/slurm_cluster.py``; see its docstring for the configuration and for how the jobstep's lost
``SLURM_CONF`` is handled.

Command-line settings the tests add to ``--workflow-profile profiles/slurm``, all because of the test
cluster, not the workflow:
  --slurm-status-command squeue                  the cluster has no accounting (sacct answers nothing)
  --slurm-init-seconds-before-status-checks 2    short jobs: poll early (MinJobAge 300 >= 3 x 2)
  --slurm-keep-successful-logs                   the test reads the job logs
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from support import ROOT
from support.slurm_cluster import SlurmCluster, missing_programs

PROFILE = ROOT / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

_missing = missing_programs()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        bool(_missing),
        reason=f"SLURM test cluster needs {', '.join(_missing)} (Debian: apt-get install slurm-wlm munge)",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="SLURM test cluster needs root (slurmd runs jobs as their user)"
    ),
]

INIT_SECONDS = 2
TEST_SITE_ARGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    str(INIT_SECONDS),
    "--slurm-keep-successful-logs",
]


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def profile_resources(rule: str) -> dict:
    """What the profile asks SLURM for on behalf of `rule`: default-resources overlaid by set-resources."""
    prof = profile()
    res = {}
    for item in prof.get("default-resources", []):
        key, value = item.split("=", 1)
        res[key] = value
    res.update(prof.get("set-resources", {}).get(rule, {}))
    res["threads"] = prof.get("set-threads", {}).get(rule)
    return res


def largest_request() -> tuple[int, int]:
    """(cores, MB) of the largest job the profile can ask for: the test node is declared that big."""
    prof = profile()
    cores = max([prof.get("cores", 1), *prof.get("set-threads", {}).values()])
    mems = [
        int(item.split("=", 1)[1]) for item in prof.get("default-resources", []) if item.startswith("mem_mb=")
    ]
    mems += [int(r["mem_mb"]) for r in prof.get("set-resources", {}).values() if "mem_mb" in r]
    return cores, max(mems, default=1000)


@pytest.fixture
def cluster(tmp_path_factory):
    cores, mem_mb = largest_request()
    c = SlurmCluster(
        tmp_path_factory.mktemp("slurm"), cpus=max(os.cpu_count() or 1, cores), memory_mb=max(mem_mb, 8000)
    )
    # squeue forgets a finished job after MinJobAge: the plugin must look before that
    assert c.min_job_age >= 3 * INIT_SECONDS
    c.start()
    try:
        yield c
    finally:
        c.stop()
        # everything the cluster started is gone (daemons by PID, job processes by the sweep)
        assert all(p.poll() is not None for p in c.procs.values())
        assert c.leftover_pids() == [], "processes of the test cluster survived its shutdown"


def slurm_job_logs(workdir: Path, lines: int = 40) -> str:
    parts = []
    for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        parts.append(f"---- {log.relative_to(workdir)} (last {lines} lines)\n" + "\n".join(text[-lines:]))
    return "\n".join(parts)


def run_snakemake(cluster: SlurmCluster, workdir: Path, extra: list[str], timeout: float):
    """snakemake --workflow-profile profiles/slurm in `workdir`; on failure or timeout the message holds
    snakemake's output, the SLURM job logs and the daemons' logs."""
    cmd = [str(SNAKEMAKE), "--workflow-profile", "profiles/slurm", *TEST_SITE_ARGS, *extra]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    wall = time.monotonic() - start

    def explain(what: str) -> str:
        squeue = cluster.run("squeue", "-a", "-t", "all", check=False).stdout
        return (
            f"{what}\n$ {' '.join(cmd)}\n---- snakemake output (last 150 lines)\n"
            + "\n".join(out.splitlines()[-150:])
            + f"\n---- squeue\n{squeue}\n"
            + slurm_job_logs(workdir)
            + "\n"
            + cluster.logs()
        )

    if timed_out:
        pytest.fail(explain(f"snakemake did not finish within {timeout:.0f}s"))
    if proc.returncode != 0:
        pytest.fail(explain(f"snakemake exited {proc.returncode} after {wall:.0f}s"))
    return out, wall, explain


def jobs_by_rule(cluster: SlurmCluster) -> dict[str, list[dict]]:
    """The SLURM jobs of the run, by rule (the plugin puts `rule_<name>[_wildcards_...]` in --comment)."""
    by_rule: dict[str, list[dict]] = {}
    for job in cluster.jobs():
        m = re.match(r"rule_(.+?)(_wildcards_.*)?$", job.get("Comment", ""))
        if m:
            by_rule.setdefault(m.group(1), []).append(job)
    return by_rule


def assert_requests(job: dict, rule: str, gpu: bool, explain) -> None:
    """The job asked SLURM for what the profile says: cores, memory, walltime, and a GPU or none."""
    want = profile_resources(rule)
    assert job["JobState"] == "COMPLETED", explain(f"{rule}: {job}")
    assert job["MinMemoryNode"] == f"{want['mem_mb']}M", explain(f"{rule} memory: {job}")
    assert job["CPUs/Task"] == str(want["threads"] or 1), explain(f"{rule} cores: {job}")
    minutes = int(want["runtime"])
    assert job["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00", explain(
        f"{rule} walltime: {job}"
    )
    if gpu:
        assert job.get("TresPerJob") == "gres:gpu:1", explain(f"{rule} should ask for one GPU: {job}")
    else:
        assert "gpu" not in job.get("TresPerJob", "") + job.get("TRES", ""), explain(
            f"{rule} asked a GPU: {job}"
        )


# ---------------------------------------------------------------------------------------------------
# 1. the harness and the profile, on a self-contained two-rule workflow

TOY_SNAKEFILE = textwrap.dedent(
    """
    # named like the real rules, so the profile's set-threads / set-resources apply to them
    localrules: all

    rule all:
        input: "refine/done.txt"

    rule gradcam:
        output: "gradcam/env.txt"
        threads: workflow.cores
        resources: gpu=1
        shell:
            "env | grep -E '^(SLURM_JOB_ID|SLURM_STEP_ID|SLURM_CPUS_PER_TASK|SLURM_JOB_PARTITION|"
            "CUDA_VISIBLE_DEVICES|SLURM_STEP_GPUS)=' | sort > {output}"

    rule refine:
        input: "gradcam/env.txt"
        output: "refine/done.txt"
        threads: 1
        shell:
            "(cat {input}; echo ---; env | grep -E '^(SLURM_JOB_ID|SLURM_STEP_ID|SLURM_CPUS_PER_TASK|"
            "CUDA_VISIBLE_DEVICES)=' | sort) > {output}"
    """
)


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@pytest.mark.slow
def test_toy_workflow_through_slurm_profile(cluster, tmp_path):
    wd = tmp_path / "toy"
    wd.mkdir()
    (wd / "Snakefile").write_text(TOY_SNAKEFILE)
    shutil.copytree(PROFILE, wd / "profiles" / "slurm")

    _, wall, explain = run_snakemake(cluster, wd, [], timeout=300)

    # both rules ran as SLURM jobs, each in its own allocation, through the jobstep's srun (a job step)
    gpu_env = parse_env((wd / "gradcam" / "env.txt").read_text())
    cpu_text = (wd / "refine" / "done.txt").read_text()
    cpu_env = parse_env(cpu_text.split("---", 1)[1])
    for env in (gpu_env, cpu_env):
        assert env.get("SLURM_JOB_ID", "").isdigit(), explain(f"not run inside a SLURM job: {env}")
        assert env.get("SLURM_STEP_ID", "").isdigit(), explain(f"not run inside a job step (srun): {env}")
    assert gpu_env["SLURM_JOB_ID"] != cpu_env["SLURM_JOB_ID"]
    # the GPU rule sees its GPU, the CPU rule none; each has the cores the profile asks for
    assert gpu_env.get("CUDA_VISIBLE_DEVICES") == "0", explain(f"gradcam got no GPU: {gpu_env}")
    assert "CUDA_VISIBLE_DEVICES" not in cpu_env, explain(f"refine got a GPU: {cpu_env}")
    assert gpu_env["SLURM_CPUS_PER_TASK"] == str(profile_resources("gradcam")["threads"])
    assert cpu_env["SLURM_CPUS_PER_TASK"] == "1"
    # (memory is not in a step's environment: slurmctld's record of each job is checked below)

    # slurmctld's view of the same jobs: exactly one job per rule, `all` ran locally
    by_rule = jobs_by_rule(cluster)
    assert sorted(by_rule) == ["gradcam", "refine"], explain(f"jobs by rule: {by_rule}")
    assert [j["JobId"] for j in by_rule["gradcam"]] == [gpu_env["SLURM_JOB_ID"]]
    assert [j["JobId"] for j in by_rule["refine"]] == [cpu_env["SLURM_JOB_ID"]]
    assert_requests(by_rule["gradcam"][0], "gradcam", gpu=True, explain=explain)
    assert_requests(by_rule["refine"][0], "refine", gpu=False, explain=explain)

    # a second run has nothing to do and submits nothing
    out2, _, explain2 = run_snakemake(cluster, wd, [], timeout=120)
    assert "Nothing to be done" in out2, explain2("second run was not a no-op")
    assert sorted(j["JobId"] for j in cluster.jobs()) == sorted(
        j["JobId"] for js in by_rule.values() for j in js
    ), explain2("second run submitted jobs")
    print(f"toy workflow through SLURM: {wall:.1f}s")


# ---------------------------------------------------------------------------------------------------
# 2. the real workflow on the demo set, tiny random BLIP on CPU


def _tiny_model_command() -> list[str] | None:
    exe = Path(sys.executable).with_name("pnp-ovss")
    if not exe.exists():
        return None
    help_text = subprocess.run([str(exe), "--help"], check=False, capture_output=True, text=True).stdout
    return [str(exe), "tiny-model"] if "tiny-model" in help_text else None


@pytest.mark.slow
@pytest.mark.workflow
def test_demo_workflow_through_slurm_profile(cluster, repo_copy, tmp_path):
    tiny = _tiny_model_command()
    if tiny is None:
        pytest.skip("`pnp-ovss tiny-model` is not available yet (needed for an offline BLIP)")
    model = tmp_path / "tiny-blip"
    subprocess.run([*tiny, str(model)], check=True, capture_output=True, text=True, timeout=300)

    # reference: the same workflow run locally, to compare the CSVs with
    local = tmp_path / "local"
    shutil.copytree(repo_copy, local, symlinks=True)
    # two shards of three images: one job per shard of each CPU stage, side by side; the profile gives gradcam a
    # GPU, so its job is sized for one (at least 500 images: both shards in one job). The job asks SLURM for the
    # node's fake GPU and, finding no CUDA there (device auto), runs on its CPU. The local reference run sizes
    # for this machine (no GPU: a model job per shard), so the results are also compared across job sizes.
    config = ["--config", f"gradcam={{model: {model}, batch_size: 3}}", "shard_size=3"]
    ref = subprocess.run(
        [str(SNAKEMAKE), "--cores", "2", "--workflow-profile", "none", *config],
        check=False,
        cwd=local,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ref.returncode == 0, "the demo workflow fails locally (reference run):\n" + "\n".join(
        (ref.stdout + ref.stderr).splitlines()[-60:]
    )

    _, wall, explain = run_snakemake(cluster, repo_copy, config, timeout=900)

    results = repo_copy / "results"
    mious = sorted(results.glob("*/miou.csv"))
    assert mious, explain("no miou.csv")
    for path in mious:
        rel = path.relative_to(repo_copy)
        assert path.read_text() == (local / rel).read_text(), explain(f"{rel} differs from the local run")
    per_class = sorted(results.glob("*/evaluate/*/set-*/per_class_iou.csv"))
    assert per_class, explain("no per_class_iou.csv")
    for path in per_class:
        rel = path.relative_to(repo_copy)
        assert path.read_text() == (local / rel).read_text(), explain(f"{rel} differs from the local run")

    figures = sorted(p.relative_to(repo_copy) for p in results.glob("*/report/*/set-*/*.png"))
    assert figures, explain("no report figures")
    assert figures == sorted(p.relative_to(local) for p in (local / "results").glob("*/report/*/set-*/*.png"))

    # every stage ran as SLURM jobs: one GPU-sized gradcam job with the GPU and the profile's cores, the CPU
    # stages one job per shard with one core each
    by_rule = jobs_by_rule(cluster)
    for rule in ("labels", "gradcam", "refine", "evaluate_shard", "report_figures"):
        assert rule in by_rule, explain(f"no SLURM job for {rule}: {sorted(by_rule)}")
    for rule in ("evaluate", "masks", "views"):  # localrules: run by snakemake itself
        assert rule not in by_rule, explain(f"{rule} was submitted: {by_rule[rule]}")
    for rule in ("labels", "refine", "evaluate_shard"):
        assert len(by_rule[rule]) == 2, explain(f"{rule}: expected one job per shard, got {by_rule[rule]}")
    assert len(by_rule["gradcam"]) == 1, explain(f"gradcam: expected one GPU-sized job, got {by_rule['gradcam']}")
    assert_requests(by_rule["gradcam"][0], "gradcam", gpu=True, explain=explain)
    gradcam_records = sorted(results.glob("demo/gradcam/*/jobs/*.json"))
    assert [json.loads(p.read_text())["images"] for p in gradcam_records] == [6], explain("the model job's images")
    assert len(sorted((local / "results").glob("demo/gradcam/*/jobs/*.json"))) == 2  # the local run: one per shard
    for job in by_rule["refine"]:
        assert_requests(job, "refine", gpu=False, explain=explain)
    assert all(j["JobState"] == "COMPLETED" for js in by_rule.values() for j in js)
    print(f"demo workflow through SLURM: {wall:.1f}s, {sum(map(len, by_rule.values()))} jobs")

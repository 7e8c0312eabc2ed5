"""What the tests share besides fixtures (those are all in tests/conftest.py): paths, the one way of running
snakemake, fabricated trees, fakes and test oracles. Nothing here is a fixture."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the authors' GPT-4o answers, where the development machine has them (tests needing them skip elsewhere)
GPT4O_DIR = ROOT.parent / "shared" / "data" / "gpt4o"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


#: what a copy of the workflow holds (the package is linked, not copied: <workflow>/src -> the real src/)
WORKFLOW_FILES = ("Snakefile", "rules", "workflow", "config", "envs", "profiles")


def copy_workflow(dst: Path) -> Path:
    """A copy of the workflow files in ``dst`` (created), whose ``src`` links to the real package."""
    import shutil

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, symlinks=False)
        else:
            shutil.copy(src, dst / name)
    (dst / "src").symlink_to(ROOT / "src")
    return dst


def shared_file(dataset: str) -> Path:
    """The authors' GPT-4o answers for ``dataset`` (:data:`GPT4O_DIR`), or skip the test where they are absent."""
    path = GPT4O_DIR / f"{dataset}_classification_noboundary.json"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def smk(cwd, *args, env=None, check=True, timeout=900) -> subprocess.CompletedProcess:
    """The real ``snakemake`` with ``args`` in ``cwd``. ``env`` adds variables (a value None removes one); a
    fault injection (``PNP_OVSS_FAULT``) is passed on only when ``env`` sets it. ``check``: a failure raises with
    the end of both streams."""
    full = {**os.environ, **{k: v for k, v in (env or {}).items() if v is not None}}
    for name in [k for k, v in (env or {}).items() if v is None]:
        full.pop(name, None)
    if "PNP_OVSS_FAULT" not in (env or {}):
        full.pop("PNP_OVSS_FAULT", None)
    proc = subprocess.run(SNAKEMAKE + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def planned(proc) -> dict[str, int]:
    """The job counts of snakemake's "Job stats" table ({} when it planned nothing)."""
    out = output_of(proc)
    if "Job stats:" not in out:
        return {}
    block = out.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M) if m.group(1) != "total"}


def model_config(model, **extra) -> str:
    """``gradcam={model: ..., device: cpu, ...}`` for ``--config``."""
    items = ", ".join([f"model: {model}", "device: cpu", *(f"{k}: {v}" for k, v in extra.items())])
    return f"gradcam={{{items}}}"

"""What a rerun costs after a change: images through labels / GradCAM / refine, GPT-4o requests, wall time.

    python benchmarks/rerun_costs.py [--model DIR] [--images 8] [--cores 2] [--keep DIR]

Runs the real workflow (`snakemake`) in a scratch copy, one change after another, on three inputs:
the embedded demo (faithful mode), a folder of photos (clean mode) that gains, changes and loses a photo,
and a fabricated VOC tree (tests/support/fabricate.py) labelled by live GPT-4o against a local OpenAI-compatible
fake server (tests/test_labels_openai.py), so requests are counted without a key or a network.
The images each stage computed come from the jobs' `computed <id>` log lines (tests/support/worklog.py).
Without `--model` a tiny random BLIP is written and used (the counts are what matters; its wall times are
the machinery's, not a real model's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.fabricate import fabricate  # noqa: E402
from support.openai_server import FakeOpenAIServer  # noqa: E402

from pnp_ovss.datasets.folder import demo_root  # noqa: E402
from support.worklog import WorkLog  # noqa: E402


def workflow_copy(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("Snakefile", "rules", "workflow", "config", "envs", "profiles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    (dst / "src").symlink_to(ROOT / "src")
    return dst


class Runner:
    def __init__(self, wf: Path, cores: int, server: FakeOpenAIServer):
        self.wf, self.cores, self.server = wf, cores, server
        self.work = WorkLog(wf / "results")
        self.rows: list[tuple] = []

    def run(self, setting: str, change: str, config: list[str]) -> None:
        env = {**os.environ, "OPENAI_API_KEY": "sk-benchmark", "OPENAI_BASE_URL": self.server.base_url}
        env.pop("PNP_OVSS_FAULT", None)
        asked = len(self.server.requests)
        tic = time.perf_counter()
        cmd = [sys.executable, "-m", "snakemake", "--cores", str(self.cores), "--config", *config]
        proc = subprocess.run(cmd, cwd=self.wf, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - tic
        if proc.returncode != 0:
            raise SystemExit(f"{setting} / {change}: snakemake failed\n{proc.stderr[-3000:]}")
        done = self.work.take()
        jobs = proc.stderr.count("Finished jobid")
        self.rows.append((setting, change, len(done["labels"]), len(done["gradcam"]), len(done["refine"]),
                          len(self.server.requests) - asked, jobs, wall))
        print(f"  {setting}: {change}: {self.rows[-1][2:5]} computed, {self.rows[-1][5]} requests, {wall:.1f} s",
              file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a local BLIP ITM checkpoint (default: a tiny random one)")
    ap.add_argument("--images", type=int, default=8, help="images in the fabricated VOC tree")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temp dir, removed)")
    a = ap.parse_args()

    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="pnp-ovss-reruns-"))
    tmp.mkdir(parents=True, exist_ok=True)
    model = a.model
    if model is None:
        from pnp_ovss.backends.blip import write_tiny_model

        model = str(write_tiny_model(tmp / "tiny-blip"))
    gradcam = f"gradcam={{model: {model}, device: cpu}}"
    server = FakeOpenAIServer().start()
    try:
        # the demo, faithful: 6 images in one released batch of 35
        demo = Runner(workflow_copy(tmp / "demo"), a.cores, server)
        demo.run("demo", "first run", [gradcam])
        demo.run("demo", "nothing changed", [gradcam])
        demo.run("demo", "limit=6 (the same images)", [gradcam, "limit=6"])
        demo.run("demo", "shard_size=2 (rounded up to whole batches)", [gradcam, "shard_size=2"])
        demo.run("demo", "refine threshold 0.3", [gradcam, "refine={threshold: 0.3}"])
        demo.run("demo", "limit=4 (cuts the batch)", [gradcam, "limit=4"])

        # a folder of photos, clean mode (per-image ranking), 2 per shard
        photos = tmp / "photos"
        (photos / "images").mkdir(parents=True)
        names = sorted(p.stem for p in (demo_root() / "images").iterdir())
        for name in names[:5]:
            shutil.copy(demo_root() / "images" / f"{name}.png", photos / "images" / f"{name}.png")
        classes = ",".join((demo_root() / "classes.txt").read_text().split())
        folder_cfg = [f"gradcam={{model: {model}, device: cpu, batch_size: 2}}", "dataset=folder",
                      f"images={photos / 'images'}", f"classes={classes}", "mode=clean", "shard_size=2"]
        folder = Runner(workflow_copy(tmp / "folder"), a.cores, server)
        folder.run("folder", "first run (5 photos)", folder_cfg)
        shutil.copy(demo_root() / "images" / f"{names[5]}.png", photos / "images" / f"{names[5]}.png")
        folder.run("folder", "a photo added", folder_cfg)
        path = photos / "images" / f"{names[0]}.png"
        pixels = np.asarray(Image.open(path).convert("RGB")).copy()
        Image.fromarray(255 - pixels).save(path)
        folder.run("folder", "a photo's pixels replaced", folder_cfg)
        (photos / "images" / f"{names[1]}.png").unlink()
        folder.run("folder", "a photo removed", folder_cfg)
        folder.run("folder", "shard_size=3", folder_cfg + ["shard_size=3"])

        # a fabricated VOC tree, faithful, live GPT-4o (fake server), batches of 2
        ids = fabricate(tmp / "data", n=a.images)
        n = len(ids["voc"])
        voc_cfg = ["dataset=voc", f"data_root={tmp / 'data'}", "labels={source: gpt4o}",
                   f"gradcam={{model: {model}, device: cpu, batch_size: 2}}"]
        voc = Runner(workflow_copy(tmp / "voc"), a.cores, server)
        voc.run("voc + GPT-4o", f"limit={n // 2}", voc_cfg + [f"limit={n // 2}", "shard_size=2"])
        voc.run("voc + GPT-4o", f"limit={n}", voc_cfg + [f"limit={n}", "shard_size=2"])
        voc.run("voc + GPT-4o", "shard_size=4", voc_cfg + [f"limit={n}", "shard_size=4"])
        voc.run("voc + GPT-4o", "gradcam head 3", voc_cfg + [f"limit={n}", "shard_size=4",
                                                            f"gradcam={{model: {model}, device: cpu, batch_size: 2, head: 3}}"])
        voc.run("voc + GPT-4o", "back to head 9", voc_cfg + [f"limit={n}", "shard_size=4"])
    finally:
        server.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = demo.rows + folder.rows + voc.rows
    print("| input | change | labels | GradCAM | refine | GPT-4o requests | jobs run | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for setting, change, lab, grad, ref, req, jobs, wall in rows:
        print(f"| {setting} | {change} | {lab} | {grad} | {ref} | {req} | {jobs} | {wall:.1f} |")


if __name__ == "__main__":
    main()

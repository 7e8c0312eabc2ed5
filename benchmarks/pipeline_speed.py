"""The whole workflow on N synthetic images with full-size random BLIP weights: images/s per stage, how much the
jobs overlapped, CPU/GPU utilisation, peak memory, and the image reading/writing the GradCAM jobs hid behind
the model.

    python benchmarks/pipeline_speed.py --images 16 --batch-size 2               # CPU, a few minutes on 2 cores
    python benchmarks/pipeline_speed.py --images 200 --device cuda               # a GPU machine
    python benchmarks/pipeline_speed.py --images 200 --device cuda --autocast bf16
    python benchmarks/pipeline_speed.py --simulate-gpu 0.02 --images 5000         # predicts a GPU run on a CPU machine

Images are demo-like landscapes (pnp_ovss.demo) at ``--size`` in a ``folder`` dataset with the demo's classes;
the model is BLIP-ITM-large's architecture with random weights (benchmarks/gradcam_speed.py), saved once to a
temporary checkpoint (``--model DIR`` uses yours, e.g. the real one). Snakemake runs with ``--cores`` (default
all) and the default profile (one GPU). Figures come from Snakemake's own per-job benchmark files, the jobs'
logs, /proc/stat and, on a GPU, nvidia-smi sampled every half second.

Printed: per stage the jobs, job-seconds and images per job-second, peak RSS; the wall time; overlap = sum of
job-seconds / wall time (1 = one job at a time); CPU utilisation of the cores given; GPU utilisation and peak
GPU memory; per GradCAM job the read+preprocess and write seconds that ran beside the model.

``--simulate-gpu S`` predicts the pipeline on a GPU machine from this one: the model jobs are sized for a GPU
at S seconds per image (``model_jobs``: sized_for gpu, gpu_seconds_per_image S), load the full-size weights
(the real set-up: process start, imports, weights), then stand in for the GPU by taking S seconds per image and
writing valid made-up maps (``gradcam.simulate_gpu``); labels, refine, evaluation, the views and the report are
the real ones, on the cores that the model job leaves (it takes one). The last lines print

    model stage busy: <model seconds / model-stage wall, from the first model job's start to the last's end>
    wall / ideal: <whole-run wall / (max(N*S, CPU-stage seconds / cores) + the tail)>

with the tail = the refine and evaluation job-seconds of the last model job's images / cores + the closing jobs
(masks, evaluate, views, report), which can only start after it.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from pnp_ovss.demo import CLASSES  # noqa: E402  (annotation value = 1-based index in this list)


def write_images(folder: Path, annotations: Path, n: int, width: int, height: int) -> None:
    """``n`` demo-like landscapes at ``width`` x ``height`` and their ground truth (so the evaluation runs too);
    what exists is kept."""
    from PIL import Image

    from pnp_ovss.demo import render_scene

    folder.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, truth = folder / f"img_{i:05d}.jpg", annotations / f"img_{i:05d}.png"
        if image.is_file() and truth.is_file():
            continue
        rgb, labels = render_scene(1000 + i, ("mountain", "water", "grass", "tree"))
        Image.fromarray(rgb).resize((width, height), Image.BICUBIC).save(image, quality=92)
        Image.fromarray(labels).resize((width, height), Image.NEAREST).save(truth)


def write_large_blip(directory: Path) -> Path:
    import torch
    from gradcam_speed import build_model

    torch.manual_seed(0)
    model, tokenizer, _, _ = build_model("blip", "base")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def date_and_machine() -> str:
    import platform
    from datetime import date

    return f"{date.today().isoformat()}, {platform.machine()} {os.cpu_count()} cores"


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


class GpuSampler:
    """nvidia-smi every half second: mean utilisation, peak memory used (whole card)."""

    def __init__(self):
        self.util, self.mem = [], []
        self._stop = threading.Event()
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5).stdout.strip()
                u, m = (float(x) for x in out.split(","))
                self.util.append(u)
                self.mem.append(m)
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.5)

    def __enter__(self):
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join()


def stage_benchmarks(results: Path) -> dict[str, list[dict]]:
    """Snakemake's benchmark rows per stage (results/<dataset>/benchmarks/<stage>/**.tsv)."""
    out: dict[str, list[dict]] = {}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        with open(tsv) as fh:
            out.setdefault(stage, []).extend(csv.DictReader(fh, delimiter="\t"))
    return out


_TIMING = re.compile(r"read\+preprocess ([\d.]+) s, model ([\d.]+) s, write ([\d.]+) s, wall ([\d.]+) s")
_PEAK = re.compile(r"peak GPU memory ([\d.]+) GiB")


def job_spans(results: Path, stage: str) -> list[tuple[str, float, float]]:
    """(job, start, end) of a stage's jobs from Snakemake's benchmark files: end = the file's time, start = end
    minus the job's wall seconds (process start included)."""
    spans = []
    for tsv in sorted((results / "benchmarks" / stage).rglob("*.tsv")):
        with open(tsv) as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        end = tsv.stat().st_mtime
        spans.append((tsv.stem, end - float(row["s"]), end))
    return spans


def shard_range(label: str) -> range:
    """``shard-0003`` -> 3..3, ``shard-0003..0009`` -> 3..9 (a job record's ``shard``)."""
    first, _, last = label.removeprefix("shard-").partition("..")
    return range(int(first), int(last or first) + 1)


_SETUP = re.compile(r": set-up ([\d.]+) s")
_MODEL = re.compile(r": (\d+) images through the model in ([\d.]+) s")


def model_stage_figures(results: Path, rows: dict, n_images: int, seconds: float | None, cores: int,
                        wall: float) -> list[str]:
    """Per model job its images, set-up and model seconds; the model stage's busy fraction; wall / ideal with
    its parts. ``seconds``: the (simulated) model seconds per image; None = as measured (a real run)."""
    import json

    lines = []
    spans = job_spans(results, "gradcam")
    model_total = 0.0
    last_job, last_end = None, -1.0
    for job, start, end in spans:
        log = next((results / "logs" / "gradcam").rglob(f"{job}.log"))
        text = log.read_text()
        setup = sum(float(x) for x in _SETUP.findall(text))
        done = [(int(n), float(t)) for n, t in _MODEL.findall(text)]
        model_total += sum(t for _, t in done)
        record = json.loads(next((results / "gradcam").rglob(f"jobs/{job}.json")).read_text())
        lines.append(f"model job {record['shard']}: {record['images']} images, set-up {setup:.2f} s, model "
                     f"{sum(t for _, t in done):.2f} s, job wall {end - start:.2f} s")
        if end > last_end:
            last_job, last_end = record, end
    stage_wall = max(e for _, _, e in spans) - min(s for _, s, _ in spans)
    if seconds is None:
        seconds = model_total / n_images
    cpu_stages = [s for s in rows if s not in ("gradcam", "search")]
    cpu_seconds = sum(float(r["s"]) for s in cpu_stages for r in rows[s])
    last = shard_range(last_job["shard"])
    tail_jobs = 0.0
    for stage in ("refine", "evaluate"):
        for job, start, end in job_spans(results, stage):
            if job.startswith("shard-") and int(job.split("-")[1]) in last:
                tail_jobs += end - start
    closing = sum(float(r["s"]) for s in ("masks", "evaluate-tables", "views", "report") if s in rows for r in rows[s])
    tail = tail_jobs / cores + closing
    ideal = max(n_images * seconds, cpu_seconds / cores) + tail
    lines.append(f"model stage: {len(spans)} job(s), model {model_total:.1f} s, wall {stage_wall:.1f} s (first start "
                 f"to last end, set-ups included)")
    lines.append(f"ideal: max(N*S = {n_images * seconds:.1f} s, CPU-stage {cpu_seconds:.1f} job-s / {cores} cores = "
                 f"{cpu_seconds / cores:.1f} s) + tail {tail:.1f} s (last model job's refine+evaluate "
                 f"{tail_jobs:.1f} job-s / {cores} + closing jobs {closing:.1f} s) = {ideal:.1f} s; wall {wall:.1f} s")
    lines.append(f"model stage busy: {model_total / stage_wall:.3f}")
    lines.append(f"wall / ideal: {wall / ideal:.3f}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", default="500x375", help="WxH of the synthetic images")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--autocast", default="none", choices=["none", "bf16", "fp16"])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--shard-size", type=int, default=0,
                    help="default: a quarter of the images, at least two batches (shards to overlap, batches to prefetch)")
    ap.add_argument("--cores", type=int, default=0, help="default: all")
    ap.add_argument("--model", help="a checkpoint directory (default: BLIP-ITM-large architecture, random weights)")
    ap.add_argument("--workdir", help="keep everything here (default: a temporary folder)")
    ap.add_argument("--simulate-gpu", type=float, metavar="S",
                    help="predict a GPU run: model jobs sized for a GPU at S s/image, loading the real weights, then "
                         "taking S s per image and writing made-up maps; every other stage real")
    ap.add_argument("--model-job-images", type=int, help="model_jobs.images (default: sized by the workflow)")
    a = ap.parse_args(argv)
    if a.simulate_gpu is not None and a.size == ap.get_default("size"):
        a.size = "64x48"  # small enough that the CPU stages are not the bound on a small machine
    width, height = (int(x) for x in a.size.lower().split("x"))
    cores = a.cores or len(os.sched_getaffinity(0))
    if a.simulate_gpu is not None:
        # CPU jobs of a few hundred images: each pays about 3 s of start-up (python, torch, scipy)
        shard = a.shard_size or max(a.batch_size, -(-a.images // (5 * cores)))
    else:
        shard = a.shard_size or max(2 * a.batch_size, -(-a.images // 4))
    shard = -(-shard // a.batch_size) * a.batch_size  # faithful shards hold whole batches

    tmp = None if a.workdir else tempfile.TemporaryDirectory()
    work = Path(a.workdir or tmp.name)
    try:
        wf = work / "wf"
        wf.mkdir(parents=True, exist_ok=True)
        for name in ("Snakefile", "rules", "workflow", "config", "envs", "profiles"):  # this checkout's, every run
            src, dst = ROOT / name, wf / name
            if dst.is_dir():
                shutil.rmtree(dst)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        if not (wf / "src").exists():
            (wf / "src").symlink_to(ROOT / "src")
        shutil.rmtree(wf / "results", ignore_errors=True)
        images, annotations = work / "images", work / "annotations"
        write_images(images, annotations, a.images, width, height)
        model = Path(a.model) if a.model else work / "blip-large-random"
        if not a.model and not (model / "config.json").is_file():
            print("writing a BLIP-ITM-large checkpoint with random weights ...", flush=True)
            write_large_blip(model)
        gradcam = f"model: {model}, device: {a.device}, autocast: {a.autocast}, batch_size: {a.batch_size}"
        jobs = f"images: {a.model_job_images}" if a.model_job_images else ""
        if a.simulate_gpu is not None:
            # the model job takes one core (a GPU job's CPU side), the CPU stages the others
            gradcam = f"model: {model}, device: cpu, batch_size: {a.batch_size}, threads: 1, simulate_gpu: {a.simulate_gpu}"
            jobs = ", ".join(x for x in (jobs, f"sized_for: gpu, gpu_seconds_per_image: {a.simulate_gpu}") if x)
        cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--config", "dataset=folder",
               f"images={images}", f"annotations={annotations}", f"classes={','.join(CLASSES)}", f"shard_size={shard}",
               f"gradcam={{{gradcam}}}",
               f"model_jobs={{{jobs}}}"]
        print(" ".join(cmd), flush=True)
        busy0, total0 = cpu_times()
        tic = time.perf_counter()
        with GpuSampler() as gpu:
            proc = subprocess.run(cmd, cwd=wf, capture_output=True, text=True)
        wall = time.perf_counter() - tic
        busy1, total1 = cpu_times()
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n")
            return 1
        results = wf / "results" / "folder"
        rows = stage_benchmarks(results)
        device = f"simulated GPU at {a.simulate_gpu} s/image" if a.simulate_gpu is not None else f"device {a.device}"
        print(f"\n{a.images} images {width}x{height}, {device}, autocast {a.autocast}, {cores} cores, "
              f"shards of {shard}, batches of {a.batch_size}; {date_and_machine()}")
        print(f"{'stage':<16} {'jobs':>4} {'job-s':>8} {'images/s':>9} {'peak RSS GiB':>13}")
        job_seconds = 0.0
        for stage in ("labels", "gradcam", "refine", "evaluate", "masks", "evaluate-tables", "report", "views"):
            if stage not in rows:
                continue
            secs = sum(float(r["s"]) for r in rows[stage])
            rss = max(float(r["max_rss"]) for r in rows[stage]) / 1024
            job_seconds += secs
            per = f"{a.images / secs:9.2f}" if stage in ("labels", "gradcam", "refine", "evaluate") and secs else f"{'':>9}"
            print(f"{stage:<16} {len(rows[stage]):>4} {secs:>8.1f} {per} {rss:>13.2f}")
        job_seconds += sum(float(r["s"]) for s, rs in rows.items() if s not in
                           ("labels", "gradcam", "refine", "evaluate", "masks", "evaluate-tables", "report", "views")
                           for r in rs)
        print(f"wall {wall:.1f} s (snakemake's planning and job start-up included); sum of job-seconds "
              f"{job_seconds:.1f} s; overlap {job_seconds / wall:.2f}")
        print(f"CPU utilisation {100 * (busy1 - busy0) / max(total1 - total0, 1e-9):.0f}% of all "
              f"{os.cpu_count()} cores of the machine ({cores} given to snakemake)")
        if gpu.util:
            print(f"GPU utilisation mean {sum(gpu.util) / len(gpu.util):.0f}% (nvidia-smi, {len(gpu.util)} samples); "
                  f"peak memory used {max(gpu.mem) / 1024:.2f} GiB")
        logs = sorted((results / "logs" / "gradcam").rglob("*.log"))
        read = model_s = write = job_wall = 0.0
        peaks = []
        for log in logs:
            text = log.read_text()
            for m in _TIMING.finditer(text):
                r, mo, w, wl = (float(x) for x in m.groups())
                read, model_s, write, job_wall = read + r, model_s + mo, write + w, job_wall + wl
            peaks += [float(x) for x in _PEAK.findall(text)]
        if job_wall:
            hidden = read + model_s + write - job_wall
            print(f"gradcam jobs: model {model_s:.1f} s, read+preprocess {read:.2f} s and write {write:.2f} s beside "
                  f"it; {hidden:.2f} s of the {read + write:.2f} s hidden by the overlap (wall {job_wall:.1f} s)")
        if peaks:
            print(f"peak GPU memory of a gradcam job (torch): {max(peaks):.2f} GiB")
        for line in model_stage_figures(results, rows, a.images, a.simulate_gpu, cores, wall):
            print(line)
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())

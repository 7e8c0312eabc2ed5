"""Carry out a :class:`~pnp_ovss.prepare.plans.Plan`: every output written atomically (a temporary file renamed
into place), outputs already there kept (``force`` redoes them), tasks spread over ``jobs`` processes, split
lists and the instances json written last, so a killed run leaves no list naming a missing image.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .. import _faults
from ..io import atomic_write_bytes, label_png_bytes
from . import ids
from .plans import CONTEXT, COPY, OBJECT_81, STUFF_171, Plan, Step, Task
from .sources import PrepareError, Source


@dataclass
class TaskResult:
    written: int = 0
    kept: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class Report:
    dataset: str
    images: int
    written: int
    kept: int
    seconds: float
    warnings: list[str]

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def _raw_map(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("L", "P"):
                raise PrepareError(f"{where}: label map has image mode {im.mode}; expected an 8-bit PNG")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise PrepareError(f"{where}: unreadable label PNG ({exc})") from None


def _derive(transform: str, data: bytes | None, step: Step, where: str, result: TaskResult) -> bytes:
    if transform == COPY:
        return data
    if transform in (STUFF_171, OBJECT_81):
        raw = _raw_map(data, where)
        odd = ids.unexpected_values(raw)
        if odd:
            result.warnings.append(f"{where}: raw values {odd} belong to no COCO-Stuff class; written as 255 (ignored)")
        table = ids.stuff_train_id_table() if transform == STUFF_171 else ids.object_train_id_table()
        return label_png_bytes(ids.apply_table(raw, table), greyscale=True)
    if transform == CONTEXT:
        annotations, h, w, label = step.payload
        try:
            mask = ids.context_class_mask(annotations, h, w)
        except (ValueError, TypeError, KeyError) as exc:
            raise PrepareError(f"{label}: cannot decode its segmentation ({exc})") from None
        out, unknown = ids.context_index(mask)
        if unknown:
            raise PrepareError(
                f"{label}: category ids {unknown} are not among the 59 PASCAL Context classes; "
                "expected the official trainval_merged.json"
            )
        return label_png_bytes(out, greyscale=True)
    raise ValueError(f"unknown transform {transform!r}")


def run_task(task: Task, sources: dict[str, Source], data_root: Path, force: bool) -> TaskResult:
    """Write the missing outputs of one image (all of them with ``force``)."""
    result = TaskResult()
    for step in task.steps:
        todo = [(p, t) for p, t in step.outputs if force or not (data_root / p).is_file()]
        result.kept += len(step.outputs) - len(todo)
        if not todo:
            continue
        source = sources[step.source] if step.source else None
        data = source.read(step.member) if source else None
        where = source.describe(step.member) if source else step.payload[3]
        for path, transform in todo:
            atomic_write_bytes(data_root / path, _derive(transform, data, step, where, result))
            result.written += 1
    return result


# --- worker processes ----------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(sources: dict[str, Source], data_root: str, force: bool) -> None:
    _WORKER.update(sources=sources, data_root=Path(data_root), force=force, done=0)


def _worker_task(task: Task) -> TaskResult:
    result = run_task(task, _WORKER["sources"], _WORKER["data_root"], _WORKER["force"])
    _WORKER["done"] += 1
    _faults.after_image("prepare", _WORKER["done"])
    return result


def execute(plan: Plan, data_root: Path, *, jobs: int = 1, force: bool = False, progress: bool = True) -> Report:
    """Run every task of ``plan`` under ``data_root``, then write its last files."""
    data_root = Path(data_root)
    start = time.perf_counter()
    total = TaskResult()
    bar = tqdm(total=len(plan.tasks), desc=f"prepare {plan.dataset}", unit="img", file=sys.stderr,
               disable=not progress, mininterval=0.5)

    def add(r: TaskResult) -> None:
        total.written += r.written
        total.kept += r.kept
        total.warnings.extend(r.warnings)
        bar.update(1)

    try:
        if jobs <= 1 or len(plan.tasks) < 2:
            for n, task in enumerate(plan.tasks, 1):
                add(run_task(task, plan.sources, data_root, force))
                _faults.after_image("prepare", n)
        else:
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
            chunk = max(1, min(64, len(plan.tasks) // (jobs * 8) or 1))
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                     initargs=(plan.sources, str(data_root), force)) as pool:
                try:
                    for r in pool.map(_worker_task, plan.tasks, chunksize=chunk):
                        add(r)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    for path, data in plan.last_files.items():
        target = data_root / path
        if force or not target.is_file() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
            total.written += 1
        else:
            total.kept += 1
    return Report(plan.dataset, len(plan.tasks), total.written, total.kept, time.perf_counter() - start, total.warnings)


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)

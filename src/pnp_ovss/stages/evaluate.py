"""The evaluate stage: a shard job's confusion matrix (:func:`run_evaluate_job`, run by the rule script
workflow/scripts/evaluate_shard.py and by the tests), the shards summed into miou.csv and per_class_iou.csv
(:func:`write_tables`, rule evaluate), and the ledger of every run evaluated (runs.csv)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..datasets import Dataset
from ..errors import DatasetError
from ..identity import key_of
from ..io import atomic_write_text, read_label_png
from ..metrics import boundary_counts, confusion, summarise
from ..protocols import Protocol

log = logging.getLogger(__name__)


def run_evaluate_job(
    dataset: Dataset,
    image_ids: list[str],
    protocol: Protocol,
    *,
    upstream_keys: dict[str, str],
    upstream_dir: Path,
    on_error: str = "fail",
) -> tuple[Counts, int, list[dict], str | None]:
    """Confusion matrix and boundary counts (:class:`Counts`) of a shard job's images, read from the per-image label maps of ``upstream_dir`` (the
    refine stage folder: ``images/<key>.png``; an image skipped upstream is listed with its stage and
    reason). Evaluate keeps no per-image entries: the rule saves the result (:func:`save_shard`)."""
    from ..entries import entry_path, read_skip, verified_digest

    masks, skipped, digests = {}, [], []
    for image_id in image_ids:
        path = entry_path(upstream_dir, "refine", upstream_keys[image_id])
        record = None if path.is_file() else read_skip(upstream_dir, upstream_keys[image_id])
        if record is not None:
            skipped.append({"image_id": image_id, "stage": record["stage"], "reason": record["reason"]})
            digests.append(None)
        else:
            masks[image_id] = path
            digests.append(verified_digest("refine", path, image_id) if path.is_file() else None)
    counts, scored, more = evaluate_masks(dataset, protocol, masks, on_error)
    made_from = None if None in digests else key_of(list(zip(image_ids, digests)))
    return counts, scored, skipped + more, made_from


class Counts:
    """What an evaluation adds up over images: the confusion matrix ``hist`` [n, n + 1] and, per class, the
    boundary intersection and union (Boundary IoU, :func:`pnp_ovss.metrics.boundary_counts`)."""

    def __init__(self, n_class: int):
        self.hist = np.zeros((n_class, n_class + 1), dtype=np.int64)
        self.boundary_intersection = np.zeros(n_class, np.int64)
        self.boundary_union = np.zeros(n_class, np.int64)

    def add_image(self, gt: np.ndarray, pred: np.ndarray) -> None:
        n = self.hist.shape[0]
        self.hist += confusion(gt, pred, n)
        inter, union = boundary_counts(gt, pred, n)
        self.boundary_intersection += inter
        self.boundary_union += union

    def add(self, other: Counts) -> None:
        if other.hist.shape != self.hist.shape:
            raise DatasetError(f"confusion matrix {other.hist.shape} differs from the others {self.hist.shape}")
        self.hist += other.hist
        self.boundary_intersection += other.boundary_intersection
        self.boundary_union += other.boundary_union

    @property
    def boundary(self) -> tuple[np.ndarray, np.ndarray]:
        return self.boundary_intersection, self.boundary_union


def evaluate_masks(
    dataset: Dataset, protocol: Protocol, masks: dict[str, Path], on_error: str = "fail"
) -> tuple[Counts, int, list[dict]]:
    """Confusion matrix and boundary counts of predicted label maps ``{image_id: png path}`` against the
    ground truth."""
    counts = Counts(protocol.n_class)
    skipped = []
    scored = 0
    for image_id, mask_path in masks.items():
        try:
            if not mask_path.is_file():
                raise DatasetError(f"{mask_path}: predicted mask missing")
            pred = read_label_png(mask_path)
            gt = dataset.ground_truth(image_id, protocol.name)
            if gt.shape != pred.shape:
                raise DatasetError(
                    f"{mask_path}: prediction is {pred.shape[1]}x{pred.shape[0]} but the ground truth "
                    f"{dataset.annotation_path(image_id)} is {gt.shape[1]}x{gt.shape[0]}"
                )
        except DatasetError as exc:
            if on_error != "skip":
                raise
            skipped.append({"image_id": image_id, "stage": "evaluate", "reason": str(exc)})
            log.warning("skipped %s: %s", image_id, exc)
            continue
        counts.add_image(gt, protocol.pred_to_eval(pred))
        scored += 1
    return counts, scored, skipped


def save_shard(path: Path, counts: Counts, n_images: int, skipped: list[dict], made_from: str | None = None) -> None:
    """A shard's confusion matrix and boundary counts, sealed with the digests of the label maps it was made
    from (the arrays: :data:`pnp_ovss.entries.SHARD_ARRAYS`)."""
    from ..entries import write_sealed_bytes

    import io

    buf = io.BytesIO()
    np.savez(
        buf,
        hist=counts.hist,
        boundary_intersection=counts.boundary_intersection,
        boundary_union=counts.boundary_union,
        n_images=np.int64(n_images),
        skipped_ids=np.array([r["image_id"] for r in skipped], dtype=str),
        skipped_reasons=np.array([f"{r['stage']}: {r['reason']}" for r in skipped], dtype=str),
    )
    write_sealed_bytes(path, buf.getvalue(), upstream=made_from)


def sum_shards(paths: list[Path]) -> tuple[Counts, int, list[dict]]:
    total, n_images, skipped = None, 0, []
    for p in paths:
        with np.load(p) as z:
            shard = Counts(z["hist"].shape[0])
            shard.hist[...] = z["hist"]
            shard.boundary_intersection[...] = z["boundary_intersection"]
            shard.boundary_union[...] = z["boundary_union"]
            if total is None:
                total = shard
            else:
                try:
                    total.add(shard)
                except DatasetError as exc:
                    raise DatasetError(f"{p}: {exc}") from None
            n_images += int(z["n_images"])
            skipped += [{"image_id": i, "reason": r} for i, r in zip(z["skipped_ids"], z["skipped_reasons"])]
    if total is None:
        raise ValueError("no shard confusion matrices to sum")
    return total, n_images, skipped


def write_tables(
    shard_paths: list[Path],
    protocol: Protocol,
    dataset_name: str,
    run_parameters: dict,
    miou_csv: Path,
    per_class_csv: Path,
    skipped_csv: Path,
) -> dict:
    """Sum the shards; write miou.csv (one row), per_class_iou.csv and skipped.csv; return the row."""
    counts, n_images, skipped = sum_shards(shard_paths)
    table, summary = summarise(counts.hist, protocol.class_names, protocol.averaging, counts.boundary)
    row = {
        "dataset": dataset_name,
        "protocol": protocol.name,
        "variant": protocol.variant,
        "mIoU": round(100 * summary["mIoU"], 4),
        "mBIoU": round(100 * summary["mBIoU"], 4),
        "pixel_accuracy": round(100 * summary["pixel_accuracy"], 4),
        "mean_accuracy": round(100 * summary["mean_accuracy"], 4),
        "n_classes_scored": summary["n_classes_scored"],
        "n_images": n_images,
        "n_skipped": len(skipped),
        **run_parameters,
    }
    atomic_write_text(miou_csv, pd.DataFrame([row]).to_csv(index=False))
    table = table.assign(iou=(100 * table["iou"]).round(4), boundary_iou=(100 * table["boundary_iou"]).round(4),
                         accuracy=(100 * table["accuracy"]).round(4))
    atomic_write_text(per_class_csv, table.to_csv(index=False))
    atomic_write_text(skipped_csv, pd.DataFrame(skipped, columns=["image_id", "reason"]).to_csv(index=False))
    return row


def concat_csv_text(paths: list[Path]) -> str:
    """One table from several one-row CSVs (the sweep's miou.csv), as CSV text."""
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True).to_csv(index=False)


LEDGER_KEY = ("evaluate.hash", "image_set")


def append_ledger(paths: list[Path], ledger: Path) -> int:
    """Add the rows of the one-row run tables ``paths`` to ``ledger`` (``runs.csv``: every run ever evaluated,
    with its parameters and when it was evaluated); a run already there (same evaluation hash and image set)
    is not added twice, and no row is ever removed. Returns the number of rows added."""
    from datetime import datetime, timezone

    ledger = Path(ledger)
    old = pd.read_csv(ledger) if ledger.is_file() else pd.DataFrame(columns=["evaluated_at", *LEDGER_KEY])
    seen = {tuple(str(v) for v in row) for row in old[list(LEDGER_KEY)].itertuples(index=False)}
    new = []
    for p in paths:
        row = pd.read_csv(p).iloc[0].to_dict()
        if tuple(str(row.get(k)) for k in LEDGER_KEY) in seen:
            continue
        stamp = datetime.fromtimestamp(Path(p).stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        new.append({"evaluated_at": stamp, **row})
    if new:
        table = pd.concat([old, pd.DataFrame(new)], ignore_index=True) if len(old) else pd.DataFrame(new)
        atomic_write_text(ledger, table.to_csv(index=False))
    return len(new)

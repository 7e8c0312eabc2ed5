"""Confusion matrices and IoU (ALGORITHM.md §7 and mmsegmentation's IoUMetric)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def confusion(gt: np.ndarray, pred: np.ndarray, n_class: int) -> np.ndarray:
    """Confusion matrix ``hist[gt, pred]`` of shape [n_class, n_class + 1].

    Pixels whose ground truth is outside 0..n_class-1 (e.g. 255) are ignored. Predictions outside
    0..n_class-1 are counted in the last column ("void"): wrong for their pixel, no class's prediction.
    """
    gt = np.asarray(gt).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels but the prediction {pred.size}")
    keep = (gt >= 0) & (gt < n_class)
    gt, pred = gt[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < n_class), pred, n_class)
    return np.bincount(gt * (n_class + 1) + pred, minlength=n_class * (n_class + 1)).reshape(
        n_class, n_class + 1
    )


def per_class_iou(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(iou, gt_pixels, pred_pixels, intersection) per class; iou is NaN where the union is empty."""
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.shape[0]
    tp = np.diag(hist[:, :n])
    gt_pixels = hist.sum(axis=1)
    pred_pixels = hist[:, :n].sum(axis=0)
    union = gt_pixels + pred_pixels - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return iou, gt_pixels, pred_pixels, tp


def summarise(hist: np.ndarray, class_names, averaging: str) -> tuple[pd.DataFrame, dict]:
    """Per-class table and summary.

    ``averaging="gt_present"`` (released code): mean IoU over classes with ground-truth pixels, class 0
    included. ``"union_present"`` (mmseg): mean over classes whose union is non-empty (a class predicted but
    absent from the ground truth counts with IoU 0).
    """
    iou, gt_pixels, pred_pixels, tp = per_class_iou(hist)
    if averaging == "gt_present":
        scored = gt_pixels > 0
    elif averaging == "union_present":
        scored = ~np.isnan(iou)
    else:
        raise ValueError(f"unknown averaging {averaging!r}")
    total = float(np.asarray(hist).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(gt_pixels > 0, tp / gt_pixels, np.nan)
    table = pd.DataFrame(
        {
            "class_id": np.arange(len(class_names)),
            "class_name": list(class_names),
            "iou": iou,
            "accuracy": acc,
            "gt_pixels": gt_pixels.astype(np.int64),
            "pred_pixels": pred_pixels.astype(np.int64),
            "scored": scored,
        }
    )
    summary = {
        "mIoU": float(np.mean(iou[scored])) if scored.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_accuracy": float(np.nanmean(acc)) if np.any(gt_pixels > 0) else float("nan"),
        "n_classes_scored": int(scored.sum()),
        "pixels": int(total),
    }
    return table, summary

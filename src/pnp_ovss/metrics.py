"""Confusion matrices and IoU (ALGORITHM.md §7 and mmsegmentation's IoUMetric); Boundary IoU (Cheng et al.,
CVPR 2021), accumulated per class over the dataset like IoU."""

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


#: the boundary band's width as a fraction of the image diagonal (Boundary IoU's ``dilation_ratio``)
BOUNDARY_RATIO = 0.02


def boundary_width(height: int, width: int, ratio: float = BOUNDARY_RATIO) -> int:
    """The band's width in pixels: ``ratio`` of the image diagonal, rounded, at least 1 (the reference code)."""
    return max(1, round(ratio * float(np.hypot(height, width))))


def inner_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` pixels (chessboard distance) of its outside, the image's border
    counting as outside: the mask minus its erosion by a (2·width+1)² square — the reference code's
    ``mask - erode(pad(mask, 1, 0), 3×3, width times)``."""
    from scipy.ndimage import minimum_filter

    mask = np.asarray(mask, dtype=bool)
    eroded = minimum_filter(mask.view(np.uint8), size=2 * width + 1, mode="constant", cval=0).astype(bool)
    return mask & ~eroded


def boundary_counts(gt: np.ndarray, pred: np.ndarray, n_class: int,
                    ratio: float = BOUNDARY_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the boundary intersection and union of one image: |G_b ∩ P_b| and |G_b ∪ P_b| over the pixels
    with a ground truth (as :func:`confusion`, 255 etc. ignored), where G_b and P_b are the inner boundary bands
    (:func:`inner_boundary`, width :func:`boundary_width`) of the class's ground-truth and predicted masks."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth is {gt.shape} but the prediction {pred.shape}")
    inter = np.zeros(n_class, np.int64)
    union = np.zeros(n_class, np.int64)
    valid = (gt >= 0) & (gt < n_class)
    width = boundary_width(*gt.shape[:2])
    present = np.union1d(np.unique(gt[valid]), np.unique(pred[valid]))
    for c in present[(present >= 0) & (present < n_class)].astype(np.int64):
        g, p = inner_boundary(gt == c, width), inner_boundary(pred == c, width)
        inter[c] = int(np.count_nonzero(g & p & valid))
        union[c] = int(np.count_nonzero((g | p) & valid))
    return inter, union


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


def summarise(hist: np.ndarray, class_names, averaging: str,
              boundary: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-class table and summary; with ``boundary`` (the dataset's boundary intersections and unions per
    class, :func:`boundary_counts` summed) also each class's Boundary IoU and their mean ``mBIoU`` over the
    classes that ``averaging`` scores.

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
    if boundary is not None:
        b_inter, b_union = (np.asarray(x, dtype=np.float64) for x in boundary)
        with np.errstate(invalid="ignore", divide="ignore"):
            biou = np.where(b_union > 0, b_inter / b_union, np.nan)
        table.insert(3, "boundary_iou", biou)
    summary = {
        "mIoU": float(np.mean(iou[scored])) if scored.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_accuracy": float(np.nanmean(acc)) if np.any(gt_pixels > 0) else float("nan"),
        "n_classes_scored": int(scored.sum()),
        "pixels": int(total),
    }
    if boundary is not None:
        scored_b = scored & ~np.isnan(biou)
        summary["mBIoU"] = float(np.mean(biou[scored_b])) if scored_b.any() else float("nan")
    return table, summary

"""Report pictures: label maps over photos with a legend, prediction beside ground truth, per-class IoU bars.

Everything here writes PNG files; the Snakemake report rule wraps them with ``report()`` captions.
Matplotlib is used through its Agg canvas directly (no global backend switch, no display needed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .errors import DatasetError
from .io import atomic_write_bytes, read_label_png
from .layout import CHART_PNG, OVERLAYS_DIR

log = logging.getLogger(__name__)

IGNORE_ID = 255
MASK_ALPHA = 0.55
BOUNDARY_COLOUR = (255, 255, 255)
PANEL_GAP = 8
BACKGROUND_FILL = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)


# --- small helpers -----------------------------------------------------------------------------------------


def font_for_width(width: int) -> ImageFont.ImageFont:
    """A legible default font scaled to the picture width (10 px minimum)."""
    return ImageFont.load_default(size=max(10, min(28, width // 40)))


def class_name_of(class_id: int, class_names: Mapping[int, str]) -> str:
    if class_id in class_names:
        return str(class_names[class_id])
    if class_id == IGNORE_ID:
        return "ignore"
    if class_id == 0:
        return "background"
    return f"id {class_id}"


def legend_entries(labels: np.ndarray, class_names: Mapping[int, str]) -> list[tuple[int, str]]:
    """(id, name) of the non-background ids present in ``labels``, largest area first (ties by id)."""
    ids, counts = np.unique(np.asarray(labels), return_counts=True)
    present = [(int(i), int(c)) for i, c in zip(ids, counts) if int(i) != 0]
    present.sort(key=lambda ic: (-ic[1], ic[0]))
    return [(i, class_name_of(i, class_names)) for i, _ in present]


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Bool [H, W]: pixels whose right or lower neighbour has another label."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def blend_mask(image_rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = MASK_ALPHA) -> np.ndarray:
    """uint8 [H, W, 3]: class colours blended over the photo where label ≠ 0, class boundaries in white."""
    image = np.asarray(image_rgb, dtype=np.uint8)
    labels = np.asarray(labels).astype(np.int64)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"label map {labels.shape} and image {image.shape[:2]} differ in size")
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    colours = palette[np.clip(labels, 0, len(palette) - 1)].astype(np.float32)
    tinted = np.where(
        (labels != 0)[..., None], (1 - alpha) * image.astype(np.float32) + alpha * colours, image.astype(np.float32)
    )
    out = np.clip(np.rint(tinted), 0, 255).astype(np.uint8)
    out[label_boundaries(labels)] = BOUNDARY_COLOUR
    return out


def _legend_layout(entries, width, font, draw):
    """Positions (x, y) of each entry's swatch in rows wrapped to ``width``; returns (positions, height)."""
    pad = max(4, font.size // 2)
    swatch = font.size
    x, y = pad, pad
    positions = []
    texts = [name for _, name in entries] or ["background only"]
    for text in texts:
        tw = draw.textlength(text, font=font)
        item_w = swatch + pad // 2 + int(np.ceil(tw)) + 2 * pad
        if x > pad and x + item_w > width:
            x, y = pad, y + swatch + pad
        positions.append((x, y))
        x += item_w
    return positions, y + swatch + pad


def draw_legend(entries, palette: np.ndarray, width: int) -> Image.Image:
    """A white strip ``width`` wide with a colour swatch and the name of each entry."""
    font = font_for_width(width)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    positions, height = _legend_layout(entries, width, font, probe)
    strip = Image.new("RGB", (width, height), BACKGROUND_FILL)
    draw = ImageDraw.Draw(strip)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    swatch = font.size
    pad = max(4, font.size // 2)
    if not entries:
        draw.text(positions[0], "background only", fill=TEXT_COLOUR, font=font)
        return strip
    for (class_id, name), (x, y) in zip(entries, positions):
        colour = tuple(int(v) for v in palette[min(class_id, len(palette) - 1)])
        draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=colour, outline=TEXT_COLOUR)
        draw.text((x + swatch + pad // 2, y), name, fill=TEXT_COLOUR, font=font)
    return strip


# --- public figures ---------------------------------------------------------------------------------------


def overlay(
    image_rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, class_names: Mapping[int, str]
) -> Image.Image:
    """The label map blended over the photo, with a legend strip of the classes present underneath.

    Size: W × (H + the legend strip's height, :func:`draw_legend`). Background (0) is left untinted;
    ``class_names`` maps dataset id → name (ids without a name show as "id N", 255 as "ignore").
    """
    blended = blend_mask(image_rgb, labels, palette)
    h, w = blended.shape[:2]
    legend = draw_legend(legend_entries(labels, class_names), palette, w)
    out = Image.new("RGB", (w, h + legend.height), BACKGROUND_FILL)
    out.paste(Image.fromarray(blended), (0, 0))
    out.paste(legend, (0, h))
    return out


def _titled(picture: Image.Image, title: str) -> Image.Image:
    font = font_for_width(picture.width)
    bar = font.size + max(4, font.size // 2) * 2
    out = Image.new("RGB", (picture.width, picture.height + bar), BACKGROUND_FILL)
    ImageDraw.Draw(out).text((max(4, font.size // 2), max(4, font.size // 2)), title, fill=TEXT_COLOUR, font=font)
    out.paste(picture, (0, bar))
    return out


def side_by_side(pictures: Sequence[Image.Image], gap: int = PANEL_GAP) -> Image.Image:
    """Pictures left to right, top-aligned, on white, ``gap`` pixels apart."""
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    height = max(p.height for p in pictures)
    out = Image.new("RGB", (width, height), BACKGROUND_FILL)
    x = 0
    for p in pictures:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def overlay_panel(
    image_rgb: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray | None,
    palette: np.ndarray,
    class_names: Mapping[int, str],
    title: str = "",
    path: str | os.PathLike | None = None,
) -> Image.Image:
    """Photo + prediction, and photo + ground truth beside it when ``gt`` is given; saved as PNG at ``path``.

    Each half is ``overlay`` under a title bar ("prediction <title>", "ground truth").
    """
    pred_title = f"prediction {title}".strip()
    pictures = [_titled(overlay(image_rgb, pred, palette, class_names), pred_title)]
    if gt is not None:
        if np.asarray(gt).shape != np.asarray(pred).shape:
            raise ValueError(f"ground truth {np.asarray(gt).shape} and prediction {np.asarray(pred).shape} differ")
        pictures.append(_titled(overlay(image_rgb, gt, palette, class_names), "ground truth"))
    panel = side_by_side(pictures)
    if path is not None:
        save_png(panel, path)
    return panel


def save_png(picture: Image.Image, path: str | os.PathLike) -> Path:
    import io

    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _iou_columns(table: pd.DataFrame) -> tuple[str, str]:
    name_col = next((c for c in ("class_name", "name", "class") if c in table.columns), None)
    iou_col = next((c for c in ("iou", "IoU") if c in table.columns), None)
    if name_col is None or iou_col is None:
        raise ValueError(f"per-class table needs class_name and iou columns, has {list(table.columns)}")
    return name_col, iou_col


def iou_bar_chart(
    per_class_iou: pd.DataFrame | str | os.PathLike,
    path: str | os.PathLike,
    title: str = "Per-class IoU",
    percent: bool | None = None,
) -> Path:
    """Horizontal bars of per-class IoU (%) for the scored classes and a dashed line at their mean (mIoU).

    ``per_class_iou``: the evaluate stage's ``per_class_iou.csv`` (or its DataFrame): columns class_name,
    iou and, when present, scored (classes not scored — no ground truth — are left out; so are NaN IoUs).
    ``percent``: whether iou is already in % (None: guessed, values > 1 mean %).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = per_class_iou if isinstance(per_class_iou, pd.DataFrame) else pd.read_csv(per_class_iou)
    name_col, iou_col = _iou_columns(table)
    rows = table
    if "scored" in rows.columns:
        rows = rows[rows["scored"].astype(str).str.lower().isin(("true", "1"))]
    rows = rows[rows[iou_col].notna()]
    values = rows[iou_col].to_numpy(dtype=float)
    if percent is None:
        percent = bool(values.size and np.nanmax(values) > 1.0)
    if not percent:
        values = values * 100
    names = rows[name_col].astype(str).tolist()
    miou = float(values.mean()) if values.size else float("nan")

    n = max(len(names), 1)
    fig = Figure(figsize=(8, 1.2 + 0.24 * n), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(names))
    ax.barh(y, values, color="#4c72b0")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    if values.size:
        ax.axvline(miou, color="#c44e52", linestyle="--", label=f"mIoU {miou:.1f}")
        ax.legend(loc="lower right")
    ax.set_title(f"{title} ({len(names)} classes scored)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# --- the report folder ------------------------------------------------------------------------------------


def find_masks(masks_dirs: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, Path]:
    """image_id → label PNG over one or several shard folders (``masks/<rh>/shard-NNNN/``)."""
    if isinstance(masks_dirs, (str, os.PathLike)):
        masks_dirs = [masks_dirs]
    found = {}
    for d in masks_dirs:
        for p in sorted(Path(d).glob("*.png")):
            found.setdefault(p.stem, p)
    return found


def sample_ids(image_ids: Sequence[str], available: Iterable[str], samples: int) -> list[str]:
    """Up to ``samples`` ids among ``image_ids`` that have a mask, evenly spread over the list (deterministic)."""
    have = set(available)
    candidates = [i for i in image_ids if i in have]
    if samples <= 0 or not candidates:
        return []
    if len(candidates) <= samples:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, samples).round().astype(int)
    return [candidates[i] for i in dict.fromkeys(picks.tolist())]


def dataset_class_names(dataset) -> dict[int, str]:
    vocab = dataset.vocabulary
    return dict(zip((int(i) for i in vocab.ids), vocab.names))


def ground_truth_or_none(dataset, image_id: str) -> np.ndarray | None:
    """The dataset-id ground truth of an image, or None when the dataset has none for it."""
    if not getattr(dataset, "has_ground_truth", False):
        return None
    try:
        return np.asarray(dataset.pnp_ground_truth(image_id))
    except (DatasetError, FileNotFoundError) as exc:
        log.warning("no ground truth shown for %s: %s", image_id, exc)
        return None


def write_overlay_samples(
    dataset,
    masks_dirs,
    image_ids: Sequence[str],
    out_dir: str | os.PathLike,
    samples: int = 8,
) -> list[Path]:
    """``<out_dir>/<image_id>.png`` panels (prediction overlay, ground truth beside it where there is one)
    for a sample of the images; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masks = find_masks(masks_dirs)
    names = dataset_class_names(dataset)
    written = []
    for image_id in sample_ids(image_ids, masks, samples):
        pred = read_label_png(masks[image_id])
        image = dataset.read_crf_image(image_id)
        if image.shape[:2] != pred.shape:
            log.warning("%s: image %s and mask %s differ in size; not shown", image_id, image.shape[:2], pred.shape)
            continue
        gt = ground_truth_or_none(dataset, image_id)
        if gt is not None and gt.shape != pred.shape:
            gt = None
        written.append(
            save_png(overlay_panel(image, pred, gt, dataset.palette, names, title=image_id), out_dir / f"{image_id}.png")
        )
    return written


def make_report_figures(
    dataset,
    masks_dirs,
    image_ids: Sequence[str],
    per_class_csv: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    samples: int = 8,
) -> dict:
    """The report folder: ``<out_dir>/overlays/<image_id>.png`` for a sample of images and
    ``<out_dir>/per_class_iou.png`` (when ``per_class_csv`` is given and exists).

    Returns ``{"overlays": [paths], "iou_chart": path or None}``.
    """
    out_dir = Path(out_dir)
    overlays = write_overlay_samples(dataset, masks_dirs, image_ids, out_dir / OVERLAYS_DIR, samples)
    chart = None
    if per_class_csv is not None and Path(per_class_csv).is_file():
        chart = iou_bar_chart(per_class_csv, out_dir / CHART_PNG, title=f"Per-class IoU, {dataset.name}")
    return {"overlays": overlays, "iou_chart": chart}


def write_parameters_table(parameters: Mapping[str, object], path: str | os.PathLike) -> Path:
    """A two-column CSV (parameter, value) of a run's parameters, e.g. ``config.flat_run_parameters``."""
    from .io import atomic_write_text

    table = pd.DataFrame({"parameter": list(parameters), "value": [str(v) for v in parameters.values()]})
    atomic_write_text(path, table.to_csv(index=False))
    return Path(path)

"""Refine stage driver: one shard's GradCAM store → one palette PNG label map per image.

CPU only: reads the Zarr store and the original images, never loads the model. Images without complete
maps in the store (skipped upstream) and, with ``on_error="skip"``, images that fail here are listed in
``<out_dir>/skipped.csv`` (``image_id,stage,reason``), which always exists.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..errors import DatasetError, PnpOvssError
from .._faults import after_image
from ..layout import PARAMETERS_CSV, SKIPPED_CSV
from ..io import atomic_write_text, label_png_bytes, publish, resize_labels, skipped_csv_text, write_label_png
from ..refine import check_refine_params, refine_image
from ..store import completed_ids, open_store, read_image_maps

_log = logging.getLogger(__name__)
_LOGGERS = (__name__, "pnp_ovss.refine")





def check_image_matches_maps(image_path: Path, image_shape: tuple, orig_size: tuple[int, int]) -> None:
    """The CRF image must have the size the GradCAM stage recorded (the label map's size)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if (h, w) != (int(orig_size[0]), int(orig_size[1])):
        raise DatasetError(
            f"{image_path}: image is {w}x{h} (WxH) but its GradCAM maps were recorded for "
            f"{orig_size[1]}x{orig_size[0]}; expected the same image as the GradCAM stage saw"
        )


def refine_one(dataset, group, image_id: str, params: dict, store_path=None):
    """Label map (uint8 [H, W], dataset ids) of one image whose maps are complete in ``group``."""
    try:
        item = read_image_maps(group, image_id)
    except (KeyError, ValueError, OSError, RuntimeError) as exc:
        where = store_path or "its GradCAM store"
        raise DatasetError(f"image {image_id}: the GradCAM maps in {where} cannot be read ({type(exc).__name__}: "
                           f"{exc}); delete that store and run again: it is recomputed") from None
    image_path = Path(dataset.crf_image_path(image_id))
    image = dataset.read_crf_image(image_id)
    check_image_matches_maps(image_path, image.shape, item.orig_size)
    labels = refine_image(item.maps, image, item.class_ids, params, dataset.background_rule)
    return resize_labels(labels, dataset.image_size(image_id))  # a capped image's mask at the photo's size


def _attach_log(log_target) -> tuple[logging.Handler, list[int]] | None:
    """A file handler on the refine loggers when ``log_target`` is a path (Snakemake's ``log[0]``)."""
    if log_target is None or isinstance(log_target, logging.Logger):
        return None
    path = Path(log_target)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    levels = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        levels.append(logger.level)
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    return handler, levels


def _detach_log(attached) -> None:
    if attached is None:
        return
    handler, levels = attached
    for name, level in zip(_LOGGERS, levels):
        logger = logging.getLogger(name)
        logger.removeHandler(handler)
        logger.setLevel(level)
    handler.close()


def refine_failure(exc: Exception, image_id: str, on_error: str, logger: logging.Logger) -> str:
    """An image that failed to refine: re-raised naming the image (``on_error: fail``), else its reason."""
    if on_error != "skip":
        logger.error("refine failed on %s: %s", image_id, exc)
        if isinstance(exc, PnpOvssError):
            raise type(exc)(f"image {image_id}: {exc}") from exc
        raise exc
    logger.warning("skipped %s: %s", image_id, exc)
    return str(exc)


def run_refine_shard(
    dataset,
    image_ids: list[str],
    params: dict,
    store_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    log: str | os.PathLike | logging.Logger | None = None,
    on_error: str = "fail",
    threads: int | None = None,
    work_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Refine every image of a shard; write ``<out_dir>/<image_id>.png`` and ``<out_dir>/skipped.csv``.

    ``work_dir``: when given, the label maps are written there first (each atomically), images whose map
    is already there are not refined again, and the finished folder is moved into ``out_dir`` with one
    rename — so a killed job (whose declared output Snakemake deletes) resumes where it stopped.

    ``log``: a log file path (appended to), a logger, or None (this module's logger only).
    ``on_error``: "fail" raises at the first failing image (naming it); "skip" records it and goes on.
    ``threads``: torch's intra-op threads (softmax, interpolation) — pass the rule's ``threads`` so that
    refine jobs running side by side do not oversubscribe the cores (pydensecrf is single-threaded).
    Returns the skipped rows ``{"image_id", "stage", "reason"}``.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error is {on_error!r}; expected 'fail' or 'skip'")
    check_refine_params(params)
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    logger = log if isinstance(log, logging.Logger) else _log
    attached = _attach_log(log)
    final_dir = Path(out_dir)
    out_dir = Path(work_dir) if work_dir is not None else final_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped: list[dict] = []
    try:
        done = completed_ids(store_path)
        group = open_store(store_path) if Path(store_path).exists() else None
        logger.info("refine %d images from %s into %s (postprocess %s)", len(image_ids), store_path, out_dir,
                    params["postprocess"])
        started = time.perf_counter()
        written = 0
        for image_id in tqdm(image_ids, desc=f"refine {out_dir.name}", unit="img", file=sys.stderr, mininterval=1.0,
                             disable=None):  # None: no bar where stderr is not a terminal (SLURM logs)
            if image_id not in done:
                reason = f"no complete GradCAM maps in {store_path}"
                skipped.append({"image_id": image_id, "stage": "gradcam", "reason": reason})
                logger.warning("skipped %s: %s", image_id, reason)
                continue
            if work_dir is not None and (out_dir / f"{image_id}.png").is_file():
                continue  # finished by an earlier, interrupted run
            try:
                tic = time.perf_counter()
                labels = refine_one(dataset, group, image_id, params)
                write_label_png(out_dir / f"{image_id}.png", labels, dataset.palette)
                written += 1
                after_image("refine", written)
                logger.debug("%s: %.2f s", image_id, time.perf_counter() - tic)
            except (PnpOvssError, ValueError, KeyError, OSError) as exc:
                reason = refine_failure(exc, image_id, on_error, logger)
                skipped.append({"image_id": image_id, "stage": "refine", "reason": reason})
        elapsed = time.perf_counter() - started
        logger.info("refined %d images in %.1f s (%.2f s/image), %d skipped", written, elapsed,
                    elapsed / max(written, 1), len(skipped))
        atomic_write_text(out_dir / SKIPPED_CSV, skipped_csv_text(skipped))
        if work_dir is not None:
            publish(out_dir, final_dir, existing="refuse")
    finally:
        _detach_log(attached)
    return skipped


def run_refine_job(
    dataset,
    image_ids: list[str],
    params: dict,
    *,
    keys: dict[str, str],
    stage_dir: str | os.PathLike,
    record: str | os.PathLike,
    upstream_keys: dict[str, str],
    upstream_dir: str | os.PathLike,
    shard: str = "",
    log: logging.Logger | None = None,
    on_error: str = "fail",
    threads: int | None = None,
) -> list[str]:
    """Refine the images of a shard job that have no label map yet (``<stage_dir>/images/<key>.png``, each
    written atomically); the others are reused. An image that GradCAM skipped, or (``on_error: skip``) that
    fails here, gets a ``<key>.skipped.json`` record instead. Returns the ids refined."""
    from ..cache import (
        entry_path, is_done, listing, outdated, read_skip, verified_digest, write_job_record, write_sealed_bytes, write_skip,
    )

    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error is {on_error!r}; expected 'fail' or 'skip'")
    check_refine_params(params)
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    logger = log or _log
    image_ids = list(image_ids)
    names = listing(stage_dir)
    todo = [i for i in image_ids if not is_done(names, "refine", keys[i], on_error)
            or outdated("refine", entry_path(stage_dir, "refine", keys[i]), "gradcam",
                        entry_path(upstream_dir, "gradcam", upstream_keys[i]), logger)]
    computed, skipped = [], []
    started = time.perf_counter()
    for image_id in tqdm(todo, desc=f"refine {shard}", unit="img", file=sys.stderr, mininterval=1.0, disable=None):
        store = entry_path(upstream_dir, "gradcam", upstream_keys[image_id])
        if not store.is_dir():
            upstream = read_skip(upstream_dir, upstream_keys[image_id])
            if upstream is None:
                raise DatasetError(f"image {image_id}: no GradCAM maps at {store}; run the gradcam stage first")
            if on_error != "skip":
                raise DatasetError(f"image {image_id}: skipped by the {upstream['stage']} stage: {upstream['reason']}")
            write_skip(stage_dir, keys[image_id], image_id, upstream["stage"], upstream["reason"])
            skipped.append(image_id)
            logger.warning("skipped %s: %s", image_id, upstream["reason"])
            continue
        try:
            tic = time.perf_counter()
            made_from = verified_digest("gradcam", store, image_id)
            labels = refine_one(dataset, open_store(store), image_id, params, store)
            write_sealed_bytes(entry_path(stage_dir, "refine", keys[image_id]),
                               label_png_bytes(labels, dataset.palette), upstream=made_from)
            computed.append(image_id)
            logger.info("computed %s (%.2f s)", image_id, time.perf_counter() - tic)
            after_image("refine", len(computed))
        except (PnpOvssError, ValueError, KeyError, OSError) as exc:
            write_skip(stage_dir, keys[image_id], image_id, "refine", refine_failure(exc, image_id, on_error, logger))
            skipped.append(image_id)
    elapsed = time.perf_counter() - started
    logger.info("refined %d images in %.1f s (%.2f s/image)", len(computed), elapsed, elapsed / max(len(computed), 1))
    reused = len(image_ids) - len(computed) - len(skipped)
    logger.info("refine %s: %d images computed, %d reused, %d skipped", shard, len(computed), reused, len(skipped))
    write_job_record(record, "refine", shard, image_ids, computed, skipped)
    return computed


def build_masks_view(
    image_ids: list[str], keys: dict[str, str], masks_dir: str | os.PathLike, view_dir: str | os.PathLike
) -> tuple[int, list[dict]]:
    """``view_dir/<image_id>.png`` for every image of the run and ``view_dir/skipped.csv``: copies of the
    per-image maps, each checked against its seal first (a damaged one is never copied; editing or deleting a
    copy never touches the cache), built beside, sealed and renamed into place. Other views of the same
    refine folder (earlier image sets) are removed: the maps themselves stay."""
    import shutil

    from ..cache import entry_path, read_skip, remove_other_sets, seal, verified_digest

    view_dir = Path(view_dir)
    tmp = view_dir.parent / f".{view_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    skipped = []
    for image_id in image_ids:
        src = entry_path(masks_dir, "refine", keys[image_id])
        if src.is_file():
            verified_digest("refine", src, image_id)
            shutil.copy2(src, tmp / f"{image_id}.png")
            continue
        record = read_skip(masks_dir, keys[image_id])
        if record is None:
            raise DatasetError(f"image {image_id}: no label map at {src}; run the refine stage first")
        skipped.append({"image_id": image_id, "stage": record["stage"], "reason": record["reason"]})
    atomic_write_text(tmp / SKIPPED_CSV, skipped_csv_text(skipped))
    seal(tmp, view_dir, view_dir.name)
    publish(tmp, view_dir, existing="replace")
    remove_other_sets(view_dir.parent, view_dir.name)
    return len(image_ids) - len(skipped), skipped


def build_latest(views: dict[Path, str], parameters: dict[str, dict], out_dir: str | os.PathLike,
                 key: str | None = None) -> list[Path]:
    """``out_dir`` = the current runs' masks by image name, whatever the hashes: ``<out_dir>/<image>.png``
    for a single run, ``<out_dir>/<label>/<image>.png`` per run of a sweep (label = the swept values, e.g.
    ``threshold=0.1``); each folder also gets ``parameters.csv`` (the run's parameters) and the view's
    ``skipped.csv``. Files are copies (editing one never touches the cache). Built beside, sealed for
    ``key`` (what the config shows, :func:`pnp_ovss.cache.check_view`) and renamed into place."""
    import shutil

    from ..cache import seal
    from ..report import write_parameters_table

    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    folders = []
    for view, label in views.items():
        target = tmp / label if label else tmp
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted(Path(view).iterdir()):
            if src.suffix in (".png", ".csv"):
                shutil.copy2(src, target / src.name)
        write_parameters_table(parameters[label], target / PARAMETERS_CSV)
        folders.append(out_dir / label if label else out_dir)
    if key is not None:
        seal(tmp, out_dir, key)
    publish(tmp, out_dir, existing="replace")
    return folders

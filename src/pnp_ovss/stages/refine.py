"""The refine stage: GradCAM maps -> one palette PNG label map per image (:func:`run_refine_job`, run by the
rule script workflow/scripts/refine.py, by ``pnp-ovss segment`` and by the tests), and the masks by image
name (:func:`write_masks`: the ``masks`` rule's view, ``segment``'s output folder).

CPU only: reads each image's GradCAM store and its CRF image, never loads the model. An image skipped
upstream and, with ``on_error: skip``, an image that fails here get a skip record instead of a label map;
the masks by image name list them in ``skipped.csv`` (``image_id,stage,reason``), which always exists.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..errors import DatasetError, PnpOvssError
from .._faults import after_image
from ..io import label_png_bytes, resize_labels
from ..refine import check_refine_params, refine_image
from ..store import open_store, read_image_maps
from .job import ShardWork


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


def refine_failure(exc: Exception, image_id: str, on_error: str, logger: logging.Logger) -> str:
    """An image that failed to refine: re-raised naming the image (``on_error: fail``), else its reason."""
    if on_error != "skip":
        logger.error("refine failed on %s: %s", image_id, exc)
        if isinstance(exc, PnpOvssError):
            raise type(exc)(f"image {image_id}: {exc}") from exc
        raise exc
    logger.warning("skipped %s: %s", image_id, exc)
    return str(exc)


def run_refine_job(
    dataset,
    image_ids: list[str],
    params: dict,
    work: ShardWork,
    *,
    on_error: str = "fail",
    threads: int | None = None,
) -> list[str]:
    """Refine the images of a shard job that have no label map yet (``images/<key>.png`` in
    ``work.stage_dir``, each written atomically); the others are reused. An image that GradCAM skipped, or
    (``on_error: skip``) that fails here, gets a ``<key>.skipped.json`` record instead. ``on_error``: "fail"
    raises at the first failing image (naming it); "skip" records it and goes on. ``threads``: torch's
    intra-op threads (softmax, interpolation) — the rule's ``threads``, so that refine jobs side by side do
    not oversubscribe the cores (pydensecrf is single-threaded). Returns the ids refined."""
    from ..entries import read_skip, verified_digest, write_sealed_bytes

    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error is {on_error!r}; expected 'fail' or 'skip'")
    check_refine_params(params)
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    logger = work.logger(__name__)
    image_ids = list(image_ids)
    todo = work.pending("refine", image_ids, on_error, "gradcam", logger)
    computed, skipped = [], []
    started = time.perf_counter()
    for image_id in tqdm(todo, desc=f"refine {work.shard}", unit="img", file=sys.stderr, mininterval=1.0,
                         disable=None):  # None: no bar where stderr is not a terminal (SLURM logs)
        store = work.upstream_entry("gradcam", image_id)
        if not store.is_dir():
            upstream = read_skip(work.upstream_dir, work.upstream_keys[image_id])
            if upstream is None:
                raise DatasetError(f"image {image_id}: no GradCAM maps at {store}; run the gradcam stage first")
            if on_error != "skip":
                raise DatasetError(f"image {image_id}: skipped by the {upstream['stage']} stage: {upstream['reason']}")
            work.skip(image_id, upstream["stage"], upstream["reason"])
            skipped.append(image_id)
            logger.warning("skipped %s: %s", image_id, upstream["reason"])
            continue
        try:
            tic = time.perf_counter()
            made_from = verified_digest("gradcam", store, image_id)
            labels = refine_one(dataset, open_store(store), image_id, params, store)
            write_sealed_bytes(work.entry("refine", image_id), label_png_bytes(labels, dataset.palette),
                               upstream=made_from)
            computed.append(image_id)
            logger.info("computed %s (%.2f s)", image_id, time.perf_counter() - tic)
            after_image("refine", len(computed))
        except (PnpOvssError, ValueError, KeyError, OSError) as exc:
            work.skip(image_id, "refine", refine_failure(exc, image_id, on_error, logger))
            skipped.append(image_id)
    elapsed = time.perf_counter() - started
    logger.info("refined %d images in %.1f s (%.2f s/image)", len(computed), elapsed, elapsed / max(len(computed), 1))
    work.finish("refine", image_ids, computed, skipped, logger)
    return computed

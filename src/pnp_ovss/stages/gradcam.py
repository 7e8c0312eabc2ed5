"""The GradCAM stage: images -> per-image maps, one Zarr store per image (docs/ARCHITECTURE.md).

:func:`run_gradcam_job` (run by the rule script workflow/scripts/gradcam.py, by ``pnp-ovss segment`` and by
the tests) computes the images of a shard job that have no store yet, ``gradcam/<hash>/images/<key>.zarr``,
each written whole and renamed into place, so a killed job resumes at its first unwritten image. In
faithful mode a batch with any image missing is recomputed whole — the patch ranking depends on the batch
(§5, §10.4) — but only its missing images are written; with ``exclude_sep_rows`` only the missing images
are computed. The search's maps (:mod:`pnp_ovss.search.maps`) read their images with the same
:func:`read_batch_inputs`.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..errors import DatasetError, LabelError
from .._faults import after_image
from ..gradcam import ImageGradcam, uses_released_ade_input
from ..ordering import batches_of
from ..store import ImageMaps
from ..vocab import caption_for
from .job import ShardWork, process_seconds


@functools.lru_cache(maxsize=2)
def cached_model(model_id: str, image_size: int, device: str, backend: str = "blip", vision_attention: str = "eager"):
    """One model per process (a shard job loads it once): a :class:`pnp_ovss.backends.LoadedModel`;
    ``vision_attention="sdpa"``: the vision tower's self-attention fused (opt-in, results differ in the last bits)."""
    from ..backends import load_model

    loaded = load_model(backend, model_id, image_size, device)
    if vision_attention == "sdpa":
        logging.getLogger(__name__).info("%s", loaded.backend.use_fused_vision_attention(loaded.model))
    return loaded


def model_for(params: dict, device: str):
    """The loaded model a stage's parameters name (``backend`` absent = BLIP, as before backends existed;
    ``vision_attention`` absent = eager)."""
    return cached_model(str(params["model"]), int(params["image_size"]), device, str(params.get("backend", "blip")),
                        str(params.get("vision_attention", "eager")))


def load_for_job(params: dict, device: str, log, what: str):
    """The job's model (:func:`model_for`); when this call loaded it, the job's set-up — from the process's
    start to the weights on the device — is logged apart from its model time: ``<what>: set-up N s (...)``."""
    misses = cached_model.cache_info().misses
    started = time.perf_counter()
    loaded = model_for(params, device)
    weights = time.perf_counter() - started
    if cached_model.cache_info().misses > misses:
        set_up = process_seconds()
        log.info("%s: set-up %.2f s (process start to the model on %s: %.2f s start and imports, %.2f s weights)",
                 what, set_up, loaded.device, set_up - weights, weights)
    return loaded


def images_to_compute(batch: list[str], done: set[str], batch_dependent: bool) -> list[str]:
    """Which images of a batch must go through the model: none when all are complete; the whole batch when
    the ranking depends on it (faithful); otherwise only the unfinished ones."""
    pending = [i for i in batch if i not in done]
    if not pending:
        return []
    return list(batch) if batch_dependent else pending


def image_labels(labels: dict, image_id: str) -> tuple[list[int], list[str]]:
    try:
        entry = labels[image_id]
    except KeyError:
        raise LabelError(f"{image_id}: no entry in the labels of this shard") from None
    ids = [int(i) for i in entry.get("selected", [])]
    names = [str(n) for n in entry.get("names", [])]
    if len(ids) != len(names):
        raise LabelError(f"{image_id}: labels have {len(ids)} selected ids but {len(names)} names")
    return ids, names


def empty_result(params: dict, grid: int) -> ImageGradcam:
    """An image with no selected class (clean mode, no confident class): K = 0 maps, no drop iterations."""
    d, k = int(params["drop_iter"]), int(params["drop_patches"])
    return ImageGradcam(np.zeros((0, d, grid, grid), np.float32), np.zeros((0, k), np.int32), caption_for([]).strip())


def image_attrs(dataset, image_id: str, class_ids, names, result: ImageGradcam, params: dict, loaded) -> dict:
    h, w = dataset.working_size(image_id)  # the size the CRF image is read at (the maps' target)
    return {
        "class_ids": [int(i) for i in class_ids],
        "class_names": list(names),
        "caption": result.caption,
        "orig_size": [int(h), int(w)],
        "image_size": int(params["image_size"]),
        "layer": int(params["layer"]),
        "head": int(params["head"]),
        "model": str(params["model"]),
        "backend": loaded.backend.name,
        "model_revision": loaded.revision,
        "params": dict(params),
    }


@dataclass
class BatchInputs:
    """One batch read and preprocessed, ready for the model: ``pixels`` [B', 3, S, S] of the images that have
    classes (``model_ids``, ``names``); the images without a class (``no_class``) need no model; ``grid``:
    the model's patch grid (P)."""

    labels: dict
    grid: int
    model_ids: list[str] = field(default_factory=list)
    names: list[list[str]] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    no_class: list[str] = field(default_factory=list)
    skipped: dict[str, str] | None = None


def read_batch_inputs(dataset, ids: list[str], labels: dict, params: dict, loaded,
                      skipped: dict[str, str] | None = None) -> BatchInputs:
    """Decode and preprocess the images ``ids`` (the CPU side of a batch; runs beside the model when
    prefetched). With ``skipped`` (a dict), an unreadable image is recorded there (id -> reason) and left out
    of the batch instead of stopping the shard (``on_error: skip``). Only a DatasetError is such an image
    (:func:`pnp_ovss.io.read_image` raises one for every missing or unreadable file); anything else is raised.
    The search's maps read their batches with it too."""
    size = int(params["image_size"])
    released_ade = uses_released_ade_input(getattr(dataset, "unnormalised_input", False), params)
    inputs = BatchInputs(labels, size // loaded.patch_size, skipped=skipped)
    pixels = []
    for image_id in ids:
        _, class_names = image_labels(labels, image_id)
        if not class_names:
            inputs.no_class.append(image_id)
            continue
        try:
            image = Image.fromarray(dataset.read_image(image_id))
        except DatasetError as exc:
            if skipped is None:
                raise
            skipped[image_id] = str(exc)
            continue
        inputs.model_ids.append(image_id)
        inputs.names.append(class_names)
        pixels.append(loaded.preprocess(image, size, released_ade))
    if pixels:
        inputs.pixels = torch.stack(pixels)
    return inputs


def run_model(inputs: BatchInputs, params: dict, loaded) -> dict[str, ImageGradcam]:
    """GradCAM + Salience Drop of a read batch as one model batch; every result of the batch by image id (an
    image without a class: :func:`empty_result`)."""
    results = {image_id: empty_result(params, inputs.grid) for image_id in inputs.no_class}
    if inputs.model_ids:
        out = loaded.gradcam_batch(inputs.pixels, inputs.names, params)
        results.update(zip(inputs.model_ids, out))
    return results


def simulated_model(inputs: BatchInputs, params: dict, seconds_per_image: float) -> dict[str, ImageGradcam]:
    """Benchmarks only (``gradcam.simulate_gpu``, ``benchmarks/pipeline_speed.py --simulate-gpu``): stands in
    for the model on a GPU, taking ``seconds_per_image`` per image through the model and making up maps and
    dropped patches of the real shapes (the same for the same image id), so that every later stage does its
    real work on them. The stage's key holds the setting: made-up maps never mix with real ones."""
    import hashlib

    time.sleep(seconds_per_image * len(inputs.model_ids))
    results = {image_id: empty_result(params, inputs.grid) for image_id in inputs.no_class}
    d, k, g = int(params["drop_iter"]), int(params["drop_patches"]), inputs.grid
    for image_id, names in zip(inputs.model_ids, inputs.names):
        rng = np.random.default_rng(int(hashlib.sha256(image_id.encode()).hexdigest()[:12], 16))
        maps = rng.random((len(names), d, g, g), dtype=np.float32)
        dropped = rng.permutation(g * g)[: d * k].reshape(d, k).astype(np.int32)
        results[image_id] = ImageGradcam(maps, dropped, caption_for(names).strip())
    return results


def log_batch(results: dict, ids: list[str], skipped: dict[str, str] | None, log) -> None:
    """``computed <id>`` for each image through the model, and why any was skipped."""
    for image_id in ids:
        if image_id in results:
            log.info("computed %s", image_id)
        else:
            log.warning("skipped %s: %s", image_id, skipped[image_id])


class _Inline:
    """An executor that runs each call at once (``overlap=False``): the same code path, nothing in parallel."""

    def submit(self, fn, *args):
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(exc)
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def pipelined(items: list, read, compute, write, *, overlap: bool = True, timings: dict | None = None) -> None:
    """``write(item, read_output, compute(read_output))`` for each item in order, with ``read`` of item i+1
    (a reader thread) and ``write`` of item i-1 (a writer thread) running while ``compute`` works on item i
    in the calling thread. At most one read ahead and one write behind: memory stays at three batches, and
    every write is finished, in order, before the next one starts. Errors of any side stop the loop; writes
    already submitted are finished first (a killed or failed job keeps every batch it wrote).

    ``timings`` (a dict) receives the seconds spent reading, computing, writing, and the wall time.
    """
    tic = time.perf_counter()
    spent = {"read": 0.0, "compute": 0.0, "write": 0.0}

    def timed(kind, fn):
        def run(*args):
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[kind] += time.perf_counter() - t
        return run

    read_t, compute_t, write_t = timed("read", read), timed("compute", compute), timed("write", write)
    with (ThreadPoolExecutor(1, thread_name_prefix="gradcam-read") if overlap else _Inline()) as reader, \
            (ThreadPoolExecutor(1, thread_name_prefix="gradcam-write") if overlap else _Inline()) as writer:
        pending_write = None
        next_read = reader.submit(read_t, items[0]) if items else None
        try:
            for i, item in enumerate(items):
                inputs = next_read.result()
                next_read = reader.submit(read_t, items[i + 1]) if i + 1 < len(items) else None
                outputs = compute_t(inputs)
                if pending_write is not None:
                    pending_write.result()
                pending_write = writer.submit(write_t, item, inputs, outputs)
            if pending_write is not None:
                pending_write.result()
                pending_write = None
        finally:
            if pending_write is not None:
                try:
                    pending_write.result()
                except BaseException:  # noqa: BLE001 - the first error is the one raised
                    pass
    if timings is not None:
        timings.update({k: timings.get(k, 0.0) + v for k, v in spent.items()})
        timings["wall"] = timings.get("wall", 0.0) + time.perf_counter() - tic
        timings["batches"] = timings.get("batches", 0) + len(items)


def run_gradcam_job(
    dataset,
    image_ids: list[str],
    params: dict,
    work: ShardWork,
    *,
    on_error: str = "fail",
    device: str = "auto",
    progress: bool = True,
    overlap: bool = True,
    timings: dict | None = None,
) -> list[str]:
    """GradCAM for the images of a shard job that have no store yet (``images/<key>.zarr`` in
    ``work.stage_dir``, :class:`pnp_ovss.stages.job.ShardWork`).

    Batches are consecutive runs of ``batch_size`` in the shard's order (shards start at batch boundaries,
    so they are the released batches). In faithful mode a batch with any image missing goes through the
    model whole (the ranking depends on the batch) and only its missing images are written; with
    ``exclude_sep_rows`` only the missing images are computed. Each image's store is written whole and
    renamed into place, so a killed job resumes at its first unwritten image. Logs ``computed <id>`` for
    every image through the model and the computed/reused counts; returns the ids computed.

    With ``overlap`` (default) the next batch's images are read and preprocessed, and the last batch's
    stores written, in two threads while the model works (:func:`pipelined`); the results are the same.
    ``timings`` (a dict) receives the seconds of each side.
    """
    from ..entries import verified_digest, write_gradcam_entry
    from .labels import read_label_entries

    log = work.logger(__name__)
    shard = work.shard
    image_ids = list(image_ids)
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("duplicate image ids in the shard")
    done = set(image_ids) - set(work.pending("gradcam", image_ids, on_error, "labels", log))
    batch_dependent = not bool(params.get("exclude_sep_rows", False))
    batches = [(batch, todo) for batch in batches_of(image_ids, int(params["batch_size"]))
               if (todo := images_to_compute(batch, done, batch_dependent))]
    loaded = load_for_job(params, device, log, f"gradcam {shard}") if batches else None
    computed: list[str] = []
    skipped_ids: list[str] = []
    stored = 0
    bar = tqdm(total=len(image_ids), initial=len(done), desc=f"gradcam {shard}", unit="img",
               disable=None if progress else True)  # None: no bar where stderr is not a terminal

    def read(item) -> BatchInputs:
        _, todo = item
        labels = read_label_entries(work.upstream_dir, work.upstream_keys, todo)
        return read_batch_inputs(dataset, todo, labels, params, loaded, {} if on_error == "skip" else None)

    def write(item, inputs: BatchInputs, results: dict) -> None:
        nonlocal stored
        batch, todo = item
        log_batch(results, todo, inputs.skipped, log)
        for image_id in batch:
            if image_id in done:
                continue
            if image_id in results:
                class_ids, class_names = image_labels(inputs.labels, image_id)
                res = results[image_id]
                attrs = image_attrs(dataset, image_id, class_ids, class_names, res, params, loaded)
                made_from = verified_digest("labels", work.upstream_entry("labels", image_id), image_id)
                write_gradcam_entry(work.stage_dir, work.keys[image_id],
                                    ImageMaps(image_id, res.maps, res.dropped, attrs), upstream=made_from)
                computed.append(image_id)
            else:
                work.skip(image_id, "gradcam", inputs.skipped[image_id])
                skipped_ids.append(image_id)
            done.add(image_id)
            stored += 1
            bar.update(1)
            log.info("stored %s -> %s", image_id, work.entry("gradcam", image_id).name)
            after_image("gradcam", stored)

    spent: dict = {} if timings is None else timings
    simulate = params.get("simulate_gpu")
    if simulate is None:
        compute = functools.partial(run_model, params=params, loaded=loaded)
    else:
        compute = functools.partial(simulated_model, params=params, seconds_per_image=float(simulate))
        log.warning("gradcam %s: simulating a GPU (gradcam.simulate_gpu %s s per image): the maps are made up", shard,
                    simulate)
    try:
        pipelined(batches, read, compute, write, overlap=overlap, timings=spent)
    finally:
        bar.close()
    if batches:
        log.info("gradcam %s: %d images through the model in %.2f s", shard,
                 sum(len(todo) for _, todo in batches), spent["compute"])
        log.info("gradcam %s: read+preprocess %.2f s, model %.2f s, write %.2f s, wall %.2f s (%s)", shard,
                 spent["read"], spent["compute"], spent["write"], spent["wall"],
                 "reads and writes beside the model" if overlap else "one after another")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            log.info("gradcam %s: peak GPU memory %.2f GiB", shard, torch.cuda.max_memory_allocated() / 2**30)
    work.finish("gradcam", image_ids, computed, skipped_ids, log)
    return computed

"""The labels stage for one shard of images: choose the classes of each image and write the shard JSON.

Output (docs/ARCHITECTURE.md, "labels" row)::

    {"params": {...}, "images": {image_id: {"raw": str | null, "parsed": [[id, prob], ...],
                                            "selected": [dataset ids in order], "names": [text names]}}}

``selected`` may be empty when ``no_fallback_class`` is on (clean mode) and nothing is confident.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import DatasetError, LabelError
from ..cache import is_done, listing, read_labels_entry, write_labels_entry, write_job_record
from ..io import atomic_write_json, read_json
from ..labels.openai_live import LiveSettings, query_answers, structured_to_text
from ..labels.parser import ParsedAnswer, answer_statistics
from ..labels.sources import (
    answers_file_path,
    labels_from_file,
    labels_from_ground_truth,
    labels_from_list,
    parse_with_context,
)

LOG = logging.getLogger(__name__)

SOURCES = ("gpt4o_file", "gpt4o", "ground_truth", "list")


def labels_from_live_api(dataset, image_ids, params, options, out_path, cache_dir, log) -> dict[str, ParsedAnswer]:
    if cache_dir is None:
        raise LabelError("labels.source=gpt4o needs a cache folder for the answers (cache_dir)")
    settings = LiveSettings.from_options(params, options)
    cache_path = Path(cache_dir)
    answers = query_answers(dataset, image_ids, settings, cache_path, log)
    out = {}
    for image_id in image_ids:
        raw = answers[image_id]
        where = f"image {image_id} (OpenAI answer cached in {cache_path}/)"
        text = raw
        if settings.json_schema:
            try:
                text = structured_to_text(raw)
            except LabelError as exc:
                raise LabelError(f"{where}: {exc}") from None
        result = parse_with_context(text, dataset.name, dataset.vocabulary, params, where)
        out[image_id] = _with_raw(result, raw)
    return out


def _with_raw(result: ParsedAnswer, raw: str) -> ParsedAnswer:
    """Record the answer as received (the JSON text for structured answers)."""
    if result.raw == raw:
        return result
    return ParsedAnswer(
        raw=raw,
        parsed=result.parsed,
        selected=result.selected,
        fallback_used=result.fallback_used,
        no_output=result.no_output,
        confident=result.confident,
        unknown_ids=result.unknown_ids,
        skipped=result.skipped,
    )


def select_labels(dataset, image_ids, params, options, out_path=None, cache_dir=None, log=None) -> dict[str, ParsedAnswer]:
    """Per-image outcome for the configured source (no file written)."""
    log = log or LOG
    source = params["source"]
    if source == "gpt4o_file":
        path = answers_file_path(dataset.name, options.get("file"))
        return labels_from_file(dataset, image_ids, params, path)
    if source == "gpt4o":
        return labels_from_live_api(dataset, image_ids, params, options, out_path, cache_dir, log)
    if source == "ground_truth":
        if not getattr(dataset, "has_ground_truth", True):
            raise DatasetError(f"labels.source=ground_truth: dataset {dataset.name} has no annotations")
        return labels_from_ground_truth(dataset, image_ids, params)
    if source == "list":
        return labels_from_list(dataset, image_ids, params, params.get("classes_list"))
    raise LabelError(f"unknown labels.source {source!r}; expected one of {', '.join(SOURCES)}")


def shard_document(params: dict, results: dict[str, ParsedAnswer], vocab) -> dict:
    keep = bool(params.get("keep_spaces", False))
    return {"params": params, "images": {image_id: r.to_record(vocab, keep) for image_id, r in results.items()}}


def run_labels_shard(
    dataset,
    image_ids: list[str],
    params: dict,
    options: dict,
    out_path: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    log: logging.Logger | None = None,
) -> None:
    """Choose the classes of ``image_ids`` and write the shard JSON atomically to ``out_path``.

    ``params``: ``config.labels_params(cfg)`` (hashed); ``options``: ``cfg['labels']`` (file, classes,
    timeout, max_retries, ...); ``cache_dir``: the live API's answer cache folder (one file per question).
    """
    log = log or LOG
    results = select_labels(dataset, list(image_ids), params, options, out_path, cache_dir, log)
    atomic_write_json(out_path, shard_document(params, results, dataset.vocabulary))
    stats = answer_statistics(list(results.values()))
    log.info(
        "labels (%s, %s): %d images, %d with no confident class, %d fallback, mean %.2f classes kept -> %s",
        params["source"],
        params["mode"],
        stats["images"],
        stats["nothing_confident"],
        stats["fallback_used"],
        stats["mean_kept"],
        out_path,
    )


def run_labels_job(
    dataset,
    image_ids: list[str],
    params: dict,
    *,
    keys: dict[str, str],
    stage_dir: str | os.PathLike,
    record: str | os.PathLike,
    options: dict,
    answers_dir: str | os.PathLike | None,
    shard: str = "",
    log: logging.Logger | None = None,
) -> list[str]:
    """The labels of the images of a shard job that have no entry yet (``<stage_dir>/images/<key>.json``);
    the others are reused. ``options``: ``cfg["labels"]``; ``answers_dir``: the live API's answer cache.
    Writes the job's record; returns the ids computed."""
    log = log or LOG
    image_ids = list(image_ids)
    names = listing(stage_dir)
    todo = [i for i in image_ids if not is_done(names, "labels", keys[i], "fail")]
    if todo:
        results = select_labels(dataset, todo, params, options, None, answers_dir, log)
        for image_id in todo:
            write_labels_entry(stage_dir, keys[image_id], image_id, results[image_id].to_record(dataset.vocabulary, bool(params.get("keep_spaces", False))))
            log.info("computed %s", image_id)
        stats = answer_statistics(list(results.values()))
        log.info(
            "labels (%s, %s): %d with no confident class, %d fallback, mean %.2f classes kept",
            params["source"], params["mode"], stats["nothing_confident"], stats["fallback_used"], stats["mean_kept"],
        )
    log.info("labels %s: %d images computed, %d reused", shard, len(todo), len(image_ids) - len(todo))
    write_job_record(record, "labels", shard, image_ids, todo, [])
    return todo


def read_label_entries(stage_dir: str | os.PathLike, keys: dict[str, str], image_ids) -> dict:
    """``{image_id: {"selected": [...], "names": [...], ...}}`` from the per-image labels entries."""
    out = {}
    for image_id in image_ids:
        try:
            out[image_id] = read_labels_entry(stage_dir, keys[image_id])
        except DatasetError as exc:
            raise LabelError(f"image {image_id}: no labels entry ({exc}); run the workflow again: the parse "
                             f"recomputes a missing or damaged entry") from None
    return out


def read_labels_shard(path: str | os.PathLike) -> dict:
    """A labels shard file, checked: ``{"params": dict, "images": {id: {"selected": [int], ...}}}``."""
    try:
        doc = read_json(path)
    except DatasetError as exc:
        raise LabelError(str(exc)) from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict) or not isinstance(doc.get("params"), dict):
        raise LabelError(f"{path}: not a labels shard (expected {{'params': ..., 'images': {{...}}}})")
    for image_id, entry in images.items():
        selected = entry.get("selected") if isinstance(entry, dict) else None
        if not isinstance(selected, list) or not all(isinstance(i, int) for i in selected):
            raise LabelError(f"{path}: image {image_id} has no list of selected class ids")
        if not isinstance(entry.get("names"), list) or len(entry["names"]) != len(selected):
            raise LabelError(f"{path}: image {image_id}: 'names' does not match 'selected'")
    return doc

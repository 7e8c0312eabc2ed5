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
from ..io import atomic_write_json, read_json
from .openai_live import LiveSettings, query_answers, structured_to_text
from .parser import ParsedAnswer, answer_statistics
from .sources import (
    answers_file_path,
    labels_from_file,
    labels_from_ground_truth,
    labels_from_list,
    parse_with_context,
)

LOG = logging.getLogger(__name__)

SOURCES = ("gpt4o_file", "gpt4o", "ground_truth", "list")


def live_cache_path(cache_dir: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """The per-shard answer cache of the live API, named after the shard (kept beside the outputs)."""
    return Path(cache_dir) / f"{Path(out_path).stem}.gpt4o-answers.json"


def labels_from_live_api(dataset, image_ids, params, options, out_path, cache_dir, log) -> dict[str, ParsedAnswer]:
    if cache_dir is None:
        raise LabelError("labels.source=gpt4o needs a cache folder for the answers (cache_dir)")
    settings = LiveSettings.from_options(params, options)
    cache_path = live_cache_path(cache_dir, out_path)
    answers = query_answers(dataset, image_ids, settings, cache_path, log)
    out = {}
    for image_id in image_ids:
        raw = answers[image_id]
        where = f"image {image_id} (OpenAI answer cached in {cache_path})"
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
        return labels_from_list(dataset, image_ids, params, options.get("classes", params.get("classes_list")))
    raise LabelError(f"unknown labels.source {source!r}; expected one of {', '.join(SOURCES)}")


def shard_document(params: dict, results: dict[str, ParsedAnswer], vocab) -> dict:
    return {"params": params, "images": {image_id: r.to_record(vocab) for image_id, r in results.items()}}


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
    timeout, max_retries, ...); ``cache_dir``: work area for the live API's per-shard answer cache.
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

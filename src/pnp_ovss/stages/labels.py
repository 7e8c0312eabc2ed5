"""The labels stage: choose the classes of each image of a shard job (:func:`run_labels_job`, run by the rule
script workflow/scripts/labels.py, by ``pnp-ovss segment`` and by the tests).

One entry per image, ``labels/<hash>/images/<key>.json`` (docs/ARCHITECTURE.md, "labels" row)::

    {"image_id": str, "raw": str | null, "parsed": [[id, prob], ...], "selected": [dataset ids in order],
     "names": [text names]}

``selected`` may be empty when ``no_fallback_class`` is on (clean mode) and nothing is confident.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import DatasetError, LabelError
from ..entries import read_labels_entry, write_labels_entry
from ..labels.openai_live import LiveSettings, query_answers, structured_to_text
from ..labels.parser import ParsedAnswer, answer_statistics
from ..labels.sources import (
    answers_file_path,
    labels_from_file,
    labels_from_ground_truth,
    labels_from_list,
    parse_with_context,
)
from .job import ShardWork

LOG = logging.getLogger(__name__)

SOURCES = ("gpt4o_file", "gpt4o", "ground_truth", "list")


def labels_from_live_api(dataset, image_ids, params, options, cache_dir, log) -> dict[str, ParsedAnswer]:
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


def select_labels(dataset, image_ids, params, options, cache_dir=None, log=None) -> dict[str, ParsedAnswer]:
    """Per-image outcome for the configured source (no file written)."""
    log = log or LOG
    source = params["source"]
    if source == "gpt4o_file":
        path = answers_file_path(dataset.name, options.get("file"))
        return labels_from_file(dataset, image_ids, params, path)
    if source == "gpt4o":
        return labels_from_live_api(dataset, image_ids, params, options, cache_dir, log)
    if source == "ground_truth":
        if not getattr(dataset, "has_ground_truth", True):
            raise DatasetError(f"labels.source=ground_truth: dataset {dataset.name} has no annotations")
        return labels_from_ground_truth(dataset, image_ids, params)
    if source == "list":
        return labels_from_list(dataset, image_ids, params, params.get("classes_list"))
    raise LabelError(f"unknown labels.source {source!r}; expected one of {', '.join(SOURCES)}")


def run_labels_job(
    dataset,
    image_ids: list[str],
    params: dict,
    work: ShardWork,
    *,
    options: dict,
    answers_dir: str | os.PathLike | None,
) -> list[str]:
    """The labels of the images of a shard job that have no entry yet (``<stage_dir>/images/<key>.json``:
    ``{"image_id", "raw", "parsed", "selected", "names"}``); the others are reused. ``options``:
    ``cfg["labels"]``; ``answers_dir``: the live API's answer cache. Writes the job's record; returns the ids
    computed."""
    log = work.logger(__name__)
    image_ids = list(image_ids)
    todo = work.pending("labels", image_ids, "fail")
    if todo:
        results = select_labels(dataset, todo, params, options, answers_dir, log)
        keep = bool(params.get("keep_spaces", False))
        for image_id in todo:
            write_labels_entry(work.stage_dir, work.keys[image_id], image_id, results[image_id].to_record(dataset.vocabulary, keep))
            log.info("computed %s", image_id)
        stats = answer_statistics(list(results.values()))
        log.info(
            "labels (%s, %s): %d with no confident class, %d fallback, mean %.2f classes kept",
            params["source"], params["mode"], stats["nothing_confident"], stats["fallback_used"], stats["mean_kept"],
        )
    work.finish("labels", image_ids, todo, None, log)
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

"""Parsing GPT-4o class answers (ALGORITHM.md §2.2).

An answer is a free-form string that is supposed to look like
``[id1: name1, id2: name2, ...], [prob1%, prob2%, ...]``; in practice the shipped answers use a
dozen variants (see the table in §2.2). Two modes:

* ``faithful`` reproduces the selection of the released code exactly: the same separator
  normalisation, probability taken after the last ``:`` and before the first ``%`` and read with
  Python's ``int``, kept when ``> min_probability`` (strictly), the answer's order, duplicates kept,
  unknown COCO ids silently dropped, the COCO-Stuff loop over the first ``len(classes)``
  probabilities (unreadable ids skipped), and the first vocabulary class as a fallback when nothing
  survives. Where the released code crashes (a VOC/PSC/ADE answer without a probability list, a
  confident probability without a class, an unreadable number, a VOC/PSC/ADE id outside the class
  list) a :class:`LabelError` says what is wrong instead.
* ``clean`` reads the same formats, pairs classes and probabilities position by position over the
  shorter list, skips the entries it cannot read (recorded in ``skipped``), drops ids that are not in
  the vocabulary, sorts and de-duplicates, and (with ``no_fallback_class``, its default) records
  "no confident class" (``selected == []``) instead of inventing one. A non-empty answer of which
  no entry at all can be read is a :class:`LabelError`.

Dataset ids: VOC/PSC/ADE (and folder/demo) use the 1-based id GPT was given; COCO uses the
category id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..descriptors import DESCRIPTORS, IDS_COCO_CATEGORY
from ..errors import LabelError
from ..vocab import Vocabulary

FAITHFUL = "faithful"
CLEAN = "clean"
MODES = (FAITHFUL, CLEAN)

#: datasets whose answers carry COCO category ids (unknown ids dropped, no-probability branch)
COCO_DATASETS = tuple(d.name for d in DESCRIPTORS.values() if d.answer_ids == IDS_COCO_CATEGORY)

#: the separator variants between the two bracket groups, replaced in this order (§2.2 step 1)
SEPARATOR_VARIANTS = (
    ("]\n\n[", "], ["),
    ("],\n\n[", "], ["),
    ("], \n[", "], [ "),
    ("],\n[", "], [ "),
    ("]\n[", "], [ "),
)
GROUP_SEPARATOR = "], ["

#: the class id placed by the "no output" branch (VOC/PSC/ADE: index 0; COCO: category 1 = person)
NO_OUTPUT_CLASS_ID = 1
NO_OUTPUT_PROBABILITY = 100

_ASCII_INT = re.compile(r"[+]?\d+", re.ASCII)
_ASCII_NUMBER = re.compile(r"[+]?(\d+)(?:\.(\d+))?", re.ASCII)
_MAX_DIGITS = 30  # clean mode: longer numbers are not probabilities or class ids


@dataclass(frozen=True)
class ParsedAnswer:
    """The outcome of parsing one answer.

    ``parsed``: ``(class id, probability)`` for each class/probability pair the selection looked at
    (answer order, ids as written, before any vocabulary check). ``confident``: ids whose probability
    passed the threshold (answer order). ``unknown_ids``: confident ids dropped because they are not
    in the vocabulary. ``selected``: the final dataset ids in order. ``fallback_used``: nothing
    confident was left and the first vocabulary class was used. ``no_output``: the answer was empty.
    ``skipped``: human-readable notes on entries that could not be read and were skipped.
    """

    raw: str | None
    parsed: list[tuple[int, int | float]]
    selected: list[int]
    fallback_used: bool
    no_output: bool = False
    confident: list[int] = field(default_factory=list)
    unknown_ids: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[int]:
        """Selected classes that come from the answer (the fallback class excluded)."""
        return [] if self.fallback_used else list(self.selected)

    def to_record(self, vocab: Vocabulary, keep_spaces: bool = False) -> dict:
        """The per-image entry of a labels shard (docs/ARCHITECTURE.md); ``names`` in their caption form."""
        return {
            "raw": self.raw,
            "parsed": [[int(i), p] for i, p in self.parsed],
            "selected": [int(i) for i in self.selected],
            "names": [vocab.caption_name(i, keep_spaces) for i in self.selected],
        }


# --- small pure helpers ------------------------------------------------------------------------


def is_coco(dataset: str) -> bool:
    return dataset in COCO_DATASETS


def resolve_no_fallback(mode: str, no_fallback_class: bool | None) -> bool:
    """``no_fallback_class`` as given, or following the mode (faithful: False, clean: True)."""
    check_mode(mode)
    return (mode == CLEAN) if no_fallback_class is None else bool(no_fallback_class)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise LabelError(f"unknown label parsing mode {mode!r}; expected one of {', '.join(MODES)}")


def normalise_separators(text: str) -> str:
    """Replace the newline variants between the two bracket groups by ``"], ["`` (§2.2 step 1)."""
    for old, new in SEPARATOR_VARIANTS:
        text = text.replace(old, new)
    return text


def split_groups(text: str) -> list[str]:
    """Strip leading/trailing brackets and split on ``"], ["`` (§2.2 step 2)."""
    return text.strip("][").split(GROUP_SEPARATOR)


def is_no_output(groups: list[str]) -> bool:
    return len(groups) == 1 and groups[0] == ""


def is_blank_group(group: str) -> bool:
    """A group with nothing but brackets, commas and whitespace (clean mode's "no output")."""
    return not group.strip(" ,[]\t\r\n")


def probability_text(piece: str) -> str:
    """The text after the last ``:`` and before the first ``%`` (§2.2 step 4)."""
    return piece.split(":")[-1].split("%")[0]


def class_id_text(entry: str) -> str:
    """The text before the first ``:`` of a class entry (§2.2 step 5)."""
    return entry.split(":")[0]


def python_int(text: str) -> int | None:
    """``int(text)`` as the released code reads numbers (whitespace tolerated); None if unreadable."""
    try:
        return int(text)
    except ValueError:
        return None


def strict_int(text: str) -> int | None:
    """An ASCII integer, optionally quoted and surrounded by whitespace; None otherwise (clean mode)."""
    text = text.strip().strip("'\"").strip()
    if len(text) > _MAX_DIGITS or not _ASCII_INT.fullmatch(text):
        return None
    return int(text)


def strict_probability(text: str) -> int | float | None:
    """An ASCII integer or decimal number (clean mode); None otherwise."""
    text = text.strip()
    if len(text) > _MAX_DIGITS:
        return None
    m = _ASCII_NUMBER.fullmatch(text)
    if not m:
        return None
    return int(m.group(1)) if m.group(2) is None else float(text)


def shorten(text: str, limit: int = 160) -> str:
    """A one-line excerpt of an answer for error messages."""
    flat = repr(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def unique_sorted(ids: list[int]) -> list[int]:
    return sorted(set(ids))


def has_duplicates(ids: list[int]) -> bool:
    return len(set(ids)) != len(ids)


# --- faithful ----------------------------------------------------------------------------------


def _faithful_probabilities(groups: list[str], entries: list[str], dataset: str, raw: str) -> list[int]:
    """The probability list of the released code (no-prob branch for COCO, crash cases as errors)."""
    if len(groups) == 1:
        if is_coco(dataset):
            return [100] * len(entries)
        raise LabelError(
            f"answer has a class list but no probability list; the released {dataset} code crashes "
            f"here (only its COCO driver gives every class 100): {shorten(raw)}"
        )
    probabilities = []
    for piece in groups[1].split(","):
        value = python_int(probability_text(piece))
        if value is None:
            raise LabelError(
                f"cannot read a probability from {piece.strip()!r} (expected a number before '%' "
                f"after the last ':'): {shorten(raw)}"
            )
        probabilities.append(value)
    return probabilities


def _faithful_pairs(entries, probabilities, dataset, min_probability, raw):
    """Loop of §2.2 step 5: returns (parsed pairs, confident ids, skipped notes)."""
    stuff = dataset in DESCRIPTORS and DESCRIPTORS[dataset].answer_loop_over_classes
    loop = probabilities[: len(entries)] if stuff else probabilities
    parsed, confident, skipped = [], [], []
    for i, prob in enumerate(loop):
        class_id = python_int(class_id_text(entries[i])) if i < len(entries) else None
        if class_id is not None:
            parsed.append((class_id, prob))
        if not prob > min_probability:
            continue
        if i >= len(entries):
            raise LabelError(
                f"probability {i + 1} ({prob}) is above {min_probability} but the answer lists only "
                f"{len(entries)} classes; the released code crashes here: {shorten(raw)}"
            )
        if class_id is None:
            if stuff:  # the released COCO-Stuff driver prints the image id and goes on
                skipped.append(f"unreadable class entry {entries[i].strip()!r}")
                continue
            raise LabelError(
                f"cannot read a class id from {entries[i].strip()!r} (expected 'id: name'): {shorten(raw)}"
            )
        confident.append(class_id)
    return parsed, confident, skipped


def _faithful_map_ids(confident, dataset, vocab, raw):
    """§2.2 step 6: COCO drops unknown ids silently; VOC/PSC/ADE index the class list."""
    if is_coco(dataset):
        known = [i for i in confident if i in vocab]
        return known, [i for i in confident if i not in vocab]
    for i in confident:
        if i not in vocab:
            raise LabelError(
                f"class id {i} is outside 1..{len(vocab)} of the {dataset} class list (the released code "
                f"crashes or wraps around to another class here): {shorten(raw)}"
            )
    return list(confident), []


def _parse_faithful(raw, dataset, vocab, min_probability, no_fallback):
    groups = split_groups(normalise_separators(raw))
    entries = groups[0].split(",")
    no_output = is_no_output(groups)
    skipped: list[str] = []
    if no_output:
        parsed, confident = [], []
        if not no_fallback:
            parsed = [(NO_OUTPUT_CLASS_ID, NO_OUTPUT_PROBABILITY)]
            confident = [NO_OUTPUT_CLASS_ID] if NO_OUTPUT_PROBABILITY > min_probability else []
    else:
        probabilities = _faithful_probabilities(groups, entries, dataset, raw)
        parsed, confident, skipped = _faithful_pairs(entries, probabilities, dataset, min_probability, raw)
    selected, unknown = _faithful_map_ids(confident, dataset, vocab, raw)
    return _finish(raw, parsed, confident, selected, unknown, skipped, vocab, no_fallback, no_output)


# --- clean -------------------------------------------------------------------------------------


def _clean_probabilities(groups, entries):
    """Probabilities as numbers (None where unreadable); no list → every class 100."""
    if len(groups) == 1:
        return [100] * len(entries)
    return [strict_probability(probability_text(piece)) for piece in groups[1].split(",")]


def _clean_pairs(entries, probabilities, min_probability):
    parsed, confident, skipped = [], [], []
    for entry, prob in zip(entries, probabilities):
        class_id = strict_int(class_id_text(entry))
        if class_id is None:
            skipped.append(f"unreadable class entry {entry.strip()!r}")
            continue
        if prob is None:
            skipped.append(f"unreadable probability for class {class_id}")
            continue
        parsed.append((class_id, prob))
        if prob > min_probability:
            confident.append(class_id)
    return parsed, confident, skipped


def _parse_clean(raw, dataset, vocab, min_probability, no_fallback):
    groups = split_groups(normalise_separators(raw.strip()))
    entries = groups[0].split(",")
    no_output = all(is_blank_group(g) for g in groups)
    if no_output:
        parsed, confident, skipped = [], [], []
        if not no_fallback:
            parsed = [(NO_OUTPUT_CLASS_ID, NO_OUTPUT_PROBABILITY)]
            confident = [NO_OUTPUT_CLASS_ID] if NO_OUTPUT_PROBABILITY > min_probability else []
    else:
        probabilities = _clean_probabilities(groups, entries)
        parsed, confident, skipped = _clean_pairs(entries, probabilities, min_probability)
        if not parsed:
            raise LabelError(
                f"no 'id: name' entry with a probability could be read from the answer: {shorten(raw)}"
            )
    known = [i for i in confident if i in vocab]
    unknown = [i for i in confident if i not in vocab]
    selected = unique_sorted(known)
    return _finish(raw, parsed, confident, selected, unknown, skipped, vocab, no_fallback, no_output)


# --- common ------------------------------------------------------------------------------------


def _finish(raw, parsed, confident, selected, unknown, skipped, vocab, no_fallback, no_output):
    fallback_used = not selected and not no_fallback
    if fallback_used:
        selected = [vocab.ids[0]]
    return ParsedAnswer(
        raw=raw,
        parsed=parsed,
        selected=selected,
        fallback_used=fallback_used,
        no_output=no_output,
        confident=confident,
        unknown_ids=unknown,
        skipped=skipped,
    )


def parse_answer(
    raw: str,
    dataset: str,
    vocab: Vocabulary,
    mode: str,
    min_probability: float = 70,
    no_fallback_class: bool | None = None,
) -> ParsedAnswer:
    """Parse one GPT answer into dataset class ids (see the module docstring for the two modes).

    ``no_fallback_class`` (None: follow the mode) replaces both the first-class fallback and the
    "no output" class by an empty selection. Raises :class:`LabelError` on malformed input.
    """
    check_mode(mode)
    if not isinstance(raw, str):
        raise LabelError(f"a label answer must be a string, got {type(raw).__name__}")
    no_fallback = resolve_no_fallback(mode, no_fallback_class)
    if mode == FAITHFUL:
        return _parse_faithful(raw, dataset, vocab, min_probability, no_fallback)
    return _parse_clean(raw, dataset, vocab, min_probability, no_fallback)


def no_answer(
    dataset: str, vocab: Vocabulary, mode: str, min_probability: float = 70, no_fallback_class: bool | None = None
) -> ParsedAnswer:
    """The outcome of the "no output" branch for an image without an answer (``raw`` is None)."""
    result = parse_answer("", dataset, vocab, mode, min_probability, no_fallback_class)
    return ParsedAnswer(
        raw=None,
        parsed=result.parsed,
        selected=result.selected,
        fallback_used=result.fallback_used,
        no_output=True,
        confident=result.confident,
        unknown_ids=result.unknown_ids,
    )


# --- statistics (§2.2 "measured") ------------------------------------------------------------------


def answer_statistics(results: list[ParsedAnswer]) -> dict:
    """Counts over many parsed answers, as reported in ALGORITHM.md §2.2.

    ``nothing_confident``: no class above the threshold (the spec's "fallback" count);
    ``fallback_used``: the first class was used (also when every confident id was unknown);
    ``unknown_ids_dropped``: answers with confident ids outside the vocabulary;
    ``duplicates`` / ``unsorted``: of the selection; ``mean_kept``: classes kept from the answer.
    """
    n = len(results)
    return {
        "images": n,
        "no_output": sum(r.no_output for r in results),
        "nothing_confident": sum(not r.confident for r in results),
        "fallback_used": sum(r.fallback_used for r in results),
        "unknown_ids_dropped": sum(bool(r.unknown_ids) for r in results),
        "duplicates": sum(has_duplicates(r.selected) for r in results),
        "unsorted": sum(r.selected != sorted(r.selected) for r in results),
        "skipped_entries": sum(len(r.skipped) for r in results),
        "mean_kept": (sum(len(r.kept) for r in results) / n) if n else 0.0,
    }

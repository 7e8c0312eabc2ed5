"""``pnp-ovss labels ...``: parse a whole answer file, fetch the authors' answers."""

from __future__ import annotations

import argparse
import json
import sys

from ..descriptors import DESCRIPTORS
from ..vocab import load_vocabulary

#: the datasets with the authors' shipped GPT-4o answers
ANSWERED = tuple(d.name for d in DESCRIPTORS.values() if d.authors_answers)
from .parser import MODES, answer_statistics
from .sources import answers_file_path, authors_answers_path, load_answers, parse_with_context


def parse_file(dataset: str, path, mode: str, min_probability: float = 70, no_fallback_class: bool | None = None):
    """``{key: ParsedAnswer}`` for every answer of a file, in file order."""
    vocab = load_vocabulary(dataset)
    params = {"mode": mode, "min_probability": min_probability, "no_fallback_class": no_fallback_class}
    answers = load_answers(path)
    return {
        key: parse_with_context(raw, dataset, vocab, params, f"key {key} in {path}") for key, raw in answers.items()
    }


def _cmd_parse(args) -> int:
    path = answers_file_path(args.dataset, args.file)
    results = parse_file(args.dataset, path, args.mode, args.min_probability, args.no_fallback_class)
    if args.stats:
        out = answer_statistics(list(results.values()))
    else:
        out = {key: r.selected for key, r in results.items()}
    json.dump(out, sys.stdout, indent=None if not args.stats else 1)
    sys.stdout.write("\n")
    return 0


def _cmd_fetch(args) -> int:
    for dataset in args.dataset:
        print(authors_answers_path(dataset, args.cache_dir))
    return 0


def register(subparsers) -> None:
    labels = subparsers.add_parser("labels", help="per-image class labels (GPT-4o answers, oracle, lists)")
    sub = labels.add_subparsers(dest="labels_command", metavar="SUBCOMMAND")

    p = sub.add_parser(
        "parse",
        help="parse a GPT-4o answer file and print JSON {image_id: [class ids]}",
        description="Parse every answer of a GPT-4o answer file as the labels stage does (ALGORITHM.md §2.2) "
        "and print {image key: [dataset class ids]} (VOC/PSC/ADE: 1-based index, COCO: category id).",
    )
    p.add_argument("--dataset", required=True, choices=list(ANSWERED))
    p.add_argument("--file", default=None, help="answer JSON (default: the authors' file, downloaded once)")
    p.add_argument("--mode", choices=MODES, default="faithful")
    p.add_argument("--min-probability", type=float, default=70, help="keep a class when its probability is > this")
    fb = p.add_mutually_exclusive_group()
    fb.add_argument(
        "--no-fallback-class",
        dest="no_fallback_class",
        action="store_const",
        const=True,
        default=None,
        help="no class instead of the first class when nothing is confident (default: clean mode only)",
    )
    fb.add_argument("--fallback-class", dest="no_fallback_class", action="store_const", const=False)
    p.add_argument("--stats", action="store_true", help="print the §2.2 statistics instead of the selections")
    p.set_defaults(func=_cmd_parse)

    f = sub.add_parser("fetch", help="download the authors' GPT-4o answer files into the user cache")
    f.add_argument("dataset", nargs="+", choices=list(ANSWERED))
    f.add_argument("--cache-dir", default=None, help="default: $PNP_OVSS_CACHE or ~/.cache/pnp-ovss")
    f.set_defaults(func=_cmd_fetch)

    labels.set_defaults(func=lambda args: (labels.print_help(), 2)[1])


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (same as ``pnp-ovss labels``)."""
    parser = argparse.ArgumentParser(prog="pnp-ovss")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["labels", *(argv or [])])
    return int(args.func(args) or 0)

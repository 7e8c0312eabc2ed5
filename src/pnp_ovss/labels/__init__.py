"""The labels stage (issue #6): which classes each image is segmented for.

Sources (``labels.source``): the authors' GPT-4o answer files, the live OpenAI API, the ground
truth (oracle) and a fixed list. Public API::

    parse_answer(raw, dataset, vocab, mode, min_probability=70, no_fallback_class=None) -> ParsedAnswer
    run_labels_shard(dataset, image_ids, params, options, out_path, cache_dir, log) -> None
    read_labels_shard(path) -> dict

Nothing here touches the network at import time.
"""

from .parser import ParsedAnswer, answer_statistics, parse_answer
from .stage import read_labels_shard, run_labels_shard

__all__ = ["ParsedAnswer", "answer_statistics", "parse_answer", "read_labels_shard", "run_labels_shard"]

"""Per-image class labels (issue #6): which classes each image is segmented for.

Sources (``labels.source``): the authors' GPT-4o answer files, the live OpenAI API, the ground
truth (oracle) and a fixed list. Public API::

    parse_answer(raw, dataset, vocab, mode, min_probability=70, no_fallback_class=None) -> ParsedAnswer

The stage that applies them to a shard is :mod:`pnp_ovss.stages.labels`. Nothing here touches the
network at import time.
"""

from .parser import ParsedAnswer, answer_statistics, parse_answer

__all__ = ["ParsedAnswer", "answer_statistics", "parse_answer"]

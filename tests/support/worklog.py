"""What the stage jobs of a results folder computed, read from their logs (``computed <image id>`` lines).

Used by the rerun tests and ``benchmarks/rerun_costs.py`` to count the images that went through each
stage between two looks; handy for a person too (``WorkLog("results").take()``).
"""

from __future__ import annotations

import re
from pathlib import Path

STAGES = ("labels", "gradcam", "refine")


class WorkLog:
    """The images each stage computed since the last :meth:`take` (new lines in the job logs)."""

    def __init__(self, results: str | Path):
        self.results = Path(results)
        self.seen: dict[Path, str] = {}

    def take(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {stage: [] for stage in STAGES}
        for path in sorted(self.results.glob("*/logs/*/*/*.log")):
            stage = path.parent.parent.name
            if stage not in out:
                continue
            text = path.read_text(errors="replace")
            before = self.seen.get(path, "")
            new = text[len(before):] if text.startswith(before) else text
            self.seen[path] = text
            out[stage] += re.findall(rf"pnp_ovss\.{stage}: computed (\S+)", new)
        return {stage: sorted(ids) for stage, ids in out.items()}

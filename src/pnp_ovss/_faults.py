"""Fault injection for the resumability tests — test-only, not part of the package's interface.

``PNP_OVSS_FAULT="<stage>:<n>:<action>"`` makes the stage ``stage`` (gradcam, refine; search counts scored
settings) act after its ``n``-th finished image in this process (every driver calls :func:`after_image` once
per image it stores, so ``n`` counts images whatever the batch size): ``kill`` sends itself SIGKILL (a job killed mid-shard), ``sleep``
blocks for an hour (so a test can kill Snakemake itself at a known point), ``slow`` sleeps one second after
every image from the ``n``-th on (a stand-in for a slow GPU stage). Unset, it does nothing.
"""

from __future__ import annotations

import os
import signal
import time


def after_image(stage: str, finished: int) -> None:
    spec = os.environ.get("PNP_OVSS_FAULT")
    if not spec:
        return
    try:
        target, n, action = spec.split(":")
        n = int(n)
    except ValueError:
        raise ValueError(f"PNP_OVSS_FAULT={spec!r}: expected <stage>:<n>:<kill|sleep|slow>") from None
    if target != stage:
        return
    if action == "slow":
        if finished >= n:
            time.sleep(1.0)
        return
    if finished != n:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sleep":
        time.sleep(3600)
    else:
        raise ValueError(f"PNP_OVSS_FAULT={spec!r}: unknown action {action!r}")

"""Rule latest: results/<dataset>/latest/ = the current runs' masks by image name (logic in pnp_ovss.stages.refine)."""
from pathlib import Path

from pnp_ovss.stages.refine import build_latest
from pnp_ovss.workflow import stage_logger

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "latest")
folders = build_latest({Path(view): label for view, label in sm.params.runs.items()}, dict(sm.params.parameters),
                       Path(sm.output[0]))
log.info("masks by image name in %s", ", ".join(str(f) for f in folders))

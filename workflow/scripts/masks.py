"""Rule masks: the run's label maps by image name, masks/<hash>/set-<key>/<image_id>.png (hard links)."""
from pathlib import Path

from pnp_ovss.layout import SKIPPED_CSV
from pnp_ovss.stages.refine import build_masks_view
from pnp_ovss.workflow import stage_logger

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "masks")
view = Path(sm.output[0])
n, skipped = build_masks_view(list(sm.params.ids), dict(sm.params.refine_keys), view.parent, view)
log.info("%d masks in %s, %d images skipped (listed in %s)", n, view, len(skipped), view / SKIPPED_CSV)

"""Rule masks: the run's label maps by image name, masks/<hash>/set-<key>/<image_id>.png (copies)."""
from pnp_ovss.layout import SKIPPED_CSV
from pnp_ovss.stages.job import JobContext
from pnp_ovss.stages.views import build_masks_view

job = JobContext.from_snakemake(snakemake, "masks")  # noqa: F821 (injected by Snakemake)
view = job.output
n, skipped = build_masks_view(list(job.params.ids), dict(job.params.refine_keys), view.parent, view)
job.log.info("%d masks in %s, %d images skipped (listed in %s)", n, view, len(skipped), view / SKIPPED_CSV)

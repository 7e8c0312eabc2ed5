"""Rule evaluate: sum the shards of a run into miou.csv and per_class_iou.csv (logic in pnp_ovss.stages.evaluate)."""
from pathlib import Path

from pnp_ovss.stages.evaluate import write_tables
from pnp_ovss.stages.job import JobContext

job = JobContext.from_snakemake(snakemake, "evaluate")  # noqa: F821 (injected by Snakemake)
out = job.snakemake.output
row = write_tables([Path(p) for p in job.snakemake.input.shards], job.protocol, job.dataset.name,
                   dict(job.params.run), Path(out.miou), Path(out.per_class), Path(out.skipped))
job.log.info("mIoU %.2f over %d images (%d skipped)", row["mIoU"], row["n_images"], row["n_skipped"])

"""Rule labels: classes per image for one shard job (logic in pnp_ovss.stages.labels)."""
from pathlib import Path

from pnp_ovss.stages.job import JobContext
from pnp_ovss.stages.labels import run_labels_job

job = JobContext.from_snakemake(snakemake, "labels")  # noqa: F821 (injected by Snakemake)
ids, params, work = job.shard_job()
run_labels_job(job.dataset, ids, params, work, options=job.config["labels"], answers_dir=Path(job.params.answers))

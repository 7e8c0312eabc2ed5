"""Rule evaluate_shard: the confusion matrix of one shard job's images (logic in pnp_ovss.stages.evaluate)."""
from pathlib import Path

from pnp_ovss.stages.evaluate import run_evaluate_job, save_shard
from pnp_ovss.stages.job import JobContext

job = JobContext.from_snakemake(snakemake, "evaluate")  # noqa: F821 (injected by Snakemake)
protocol = job.protocol
job.write_params()
work = job.params.work
counts, n, skipped, made_from = run_evaluate_job(
    job.dataset, list(job.params.ids), protocol, upstream_keys=work["upstream"],
    upstream_dir=Path(job.params.upstream_dir), on_error=job.config["on_error"],
)
job.log.info("evaluate %s: %d images scored, %d skipped", work["shard"], n, len(skipped))
save_shard(job.output, counts, n, skipped, made_from)

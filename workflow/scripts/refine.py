"""Rule refine: label maps for one shard job from the GradCAM stores (logic in pnp_ovss.stages.refine)."""
from pnp_ovss.stages.job import JobContext
from pnp_ovss.stages.refine import run_refine_job

job = JobContext.from_snakemake(snakemake, "refine")  # noqa: F821 (injected by Snakemake)
ids, params, work = job.shard_job()
run_refine_job(job.dataset, ids, params, work, on_error=job.config["on_error"], threads=job.snakemake.threads)

"""Rule gradcam: GradCAM + Salience Drop for one shard job, any backend (logic in pnp_ovss.stages.gradcam)."""
from pnp_ovss.stages.gradcam import run_gradcam_job
from pnp_ovss.stages.job import JobContext

job = JobContext.from_snakemake(snakemake, "gradcam", model=True)  # noqa: F821 (injected by Snakemake)
ids, params, work = job.shard_job()
run_gradcam_job(job.dataset, ids, params, work, on_error=job.config["on_error"], device=job.params.device)

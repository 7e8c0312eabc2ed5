"""Rule search_maps: one-pass maps of every searched (layer, head) for one shard job (logic in
pnp_ovss.search.maps)."""
from pnp_ovss.search.maps import run_search_maps_job
from pnp_ovss.stages.job import JobContext

job = JobContext.from_snakemake(snakemake, "search", model=True)  # noqa: F821 (injected by Snakemake)
ids, params, work = job.shard_job()
run_search_maps_job(job.dataset, ids, params, work, on_error=job.config["on_error"], device=job.params.device,
                    batch_size=job.params.batch_size)

"""Rule search_score: score the settings with the CLIP weak reward (logic in pnp_ovss.search.run)."""
from pathlib import Path

from pnp_ovss.config import check_search_refine
from pnp_ovss.search.run import run_search
from pnp_ovss.stages.job import JobContext

job = JobContext.from_snakemake(snakemake, "search", model=True)  # noqa: F821 (injected by Snakemake)
sm = job.snakemake
out_dir = Path(sm.output.rewards).parent
params = dict(sm.params.stage, backend=sm.params.maps_params["backend"], model=sm.params.maps_params["model"])
check_search_refine(params["refine"])
job.write_params(out_dir, params)
run_search(
    job.dataset,
    list(sm.params.ids),
    params,
    keys=dict(sm.params.image_keys),
    maps_dir=sm.params.maps_dir,
    out_dir=out_dir,
    device="cpu" if sm.params.device == "cpu" else "auto",
    batch_size=sm.params.batch_size,
    log=job.log,
    protocol=job.protocol if job.dataset.has_ground_truth else None,
)

"""Rule search_maps: one-pass maps of every searched (layer, head) for one shard job (logic in
pnp_ovss.search.maps)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.search.maps import run_search_maps_job
from pnp_ovss.workflow import set_model_job_threads, stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "search")
set_model_job_threads(sm.config["gradcam"], sm.threads, log)
stage_dir = Path(sm.output[0]).parent.parent
write_params_yaml(stage_dir, sm.params.stage)
run_search_maps_job(
    get_dataset(sm.config),
    list(sm.params.ids),
    sm.params.stage,
    keys=sm.params.work["keys"],
    stage_dir=stage_dir,
    manifest=sm.output[0],
    upstream_keys=sm.params.work["upstream"],
    upstream_dir=sm.params.labels_dir,
    shard=sm.params.work["shard"],
    log=log,
    on_error=sm.config["on_error"],
    device=sm.params.device,
    batch_size=sm.params.batch_size,
)

"""Rule gradcam: GradCAM + Salience Drop for one shard job, any backend (logic in pnp_ovss.stages.gradcam)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.stages.gradcam import run_gradcam_job
from pnp_ovss.workflow import set_model_job_threads, stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "gradcam")
set_model_job_threads(sm.config["gradcam"], sm.threads, log)
stage_dir = Path(sm.output[0]).parent.parent
write_params_yaml(stage_dir, sm.params.stage)
run_gradcam_job(
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
)

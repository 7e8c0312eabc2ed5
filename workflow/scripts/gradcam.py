"""Rule gradcam: GradCAM + Salience Drop for one shard job, any backend (logic in pnp_ovss.stages.gradcam)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.stages.gradcam import run_gradcam_job
from pnp_ovss.workflow import stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "gradcam")
stage_dir = Path(sm.output[0]).parent.parent
write_params_yaml(stage_dir, sm.params.stage)
run_gradcam_job(
    get_dataset(sm.config),
    list(sm.params.ids),
    sm.params.work["keys"],
    sm.params.work["upstream"],
    sm.params.stage,
    sm.params.labels_dir,
    stage_dir,
    sm.output[0],
    sm.params.device,
    log,
    on_error=sm.config["on_error"],
    shard=sm.params.work["shard"],
)

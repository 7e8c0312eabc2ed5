"""Rule refine: label maps for one shard job from the GradCAM stores (logic in pnp_ovss.stages.refine)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.stages.refine import run_refine_job
from pnp_ovss.workflow import stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "refine")
stage_dir = Path(sm.output[0]).parent.parent
write_params_yaml(stage_dir, sm.params.stage)
run_refine_job(
    get_dataset(sm.config),
    list(sm.params.ids),
    sm.params.stage,
    keys=sm.params.work["keys"],
    stage_dir=stage_dir,
    manifest=sm.output[0],
    upstream_keys=sm.params.work["upstream"],
    upstream_dir=sm.params.gradcam_dir,
    shard=sm.params.work["shard"],
    log=log,
    on_error=sm.config["on_error"],
    threads=sm.threads,
)

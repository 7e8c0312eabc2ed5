"""Rule gradcam: BLIP GradCAM + Salience Drop for one shard (logic in pnp_ovss.gradcam_stage)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.gradcam_stage import run_gradcam_shard
from pnp_ovss.labels.stage import read_labels_shard
from pnp_ovss.workflow import stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "gradcam")
out = Path(sm.output[0])
write_params_yaml(out.parent, sm.params.stage)
labels = read_labels_shard(sm.input.labels)["images"]
run_gradcam_shard(
    get_dataset(sm.config),
    list(sm.params.ids),
    labels,
    sm.params.stage,
    out,
    Path(sm.params.work),
    sm.params.device,
    log,
    on_error=sm.config["on_error"],
)

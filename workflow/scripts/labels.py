"""Rule labels: classes per image for one shard job (logic in pnp_ovss.stages.labels)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.stages.labels import run_labels_job
from pnp_ovss.workflow import stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "labels")
stage_dir = Path(sm.output[0]).parent.parent
write_params_yaml(stage_dir, sm.params.stage)
run_labels_job(
    get_dataset(sm.config),
    list(sm.params.ids),
    sm.params.stage,
    keys=sm.params.work["keys"],
    stage_dir=stage_dir,
    manifest=sm.output[0],
    options=sm.config["labels"],
    answers_dir=Path(sm.params.answers),
    shard=sm.params.work["shard"],
    log=log,
)

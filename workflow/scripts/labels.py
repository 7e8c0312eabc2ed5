"""Rule labels: classes per image for one shard (logic in pnp_ovss.labels)."""
from pnp_ovss.datasets import get_dataset
from pnp_ovss.labels.stage import run_labels_shard
from pnp_ovss.workflow import stage_logger, write_params_yaml
from pathlib import Path

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "labels")
out = Path(sm.output[0])
write_params_yaml(out.parent, sm.params.stage)
run_labels_shard(
    get_dataset(sm.config), list(sm.params.ids), sm.params.stage, sm.config["labels"], out, Path(sm.params.cache), log
)

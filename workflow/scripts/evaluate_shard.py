"""Rule evaluate_shard: the confusion matrix of one shard job's images (logic in pnp_ovss.stages.evaluate)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.stages.evaluate import run_evaluate_job, save_shard
from pnp_ovss.protocols import get_protocol
from pnp_ovss.workflow import stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "evaluate")
cfg = sm.config
dataset = get_dataset(cfg)
protocol = get_protocol(dataset.name, cfg["protocol"], dataset.vocabulary, cfg["mmseg_variant"])
write_params_yaml(Path(sm.output[0]).parent.parent, sm.params.stage)
ids = list(sm.params.ids)
hist, n, skipped, made_from = run_evaluate_job(
    dataset, ids, protocol, upstream_keys=sm.params.work["upstream"], upstream_dir=Path(sm.params.masks_dir),
    on_error=cfg["on_error"],
)
log.info("evaluate %s: %d images scored, %d skipped", sm.params.work["shard"], n, len(skipped))
save_shard(Path(sm.output[0]), hist, n, skipped, made_from)

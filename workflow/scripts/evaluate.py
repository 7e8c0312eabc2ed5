"""Rule evaluate: sum the shards of a run into miou.csv and per_class_iou.csv (logic in pnp_ovss.stages.evaluate)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.stages.evaluate import write_tables
from pnp_ovss.protocols import get_protocol
from pnp_ovss.workflow import stage_logger

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "evaluate")
cfg = sm.config
dataset = get_dataset(cfg)
protocol = get_protocol(dataset.name, cfg["protocol"], dataset.vocabulary, cfg["mmseg_variant"])
row = write_tables(
    [Path(p) for p in sm.input.shards],
    protocol,
    dataset.name,
    dict(sm.params.run),
    Path(sm.output.miou),
    Path(sm.output.per_class),
    Path(sm.output.skipped),
)
log.info("mIoU %.2f over %d images (%d skipped)", row["mIoU"], row["n_images"], row["n_skipped"])

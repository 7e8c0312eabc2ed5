"""Rule report_figures: overlays, per-class IoU chart and run parameters (logic in pnp_ovss.report)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.report import make_report_figures
from pnp_ovss.workflow import stage_logger

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "report")
make_report_figures(
    get_dataset(sm.config),
    [Path(p) for p in sm.input.masks],
    Path(sm.input.per_class),
    Path(sm.input.miou),
    Path(sm.output[0]),
    samples=int(sm.params.samples),
)

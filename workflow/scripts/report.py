"""Rule report_figures: overlays, per-class IoU chart and run parameters (logic in pnp_ovss.report)."""
from pathlib import Path

from pnp_ovss.cache import remove_other_sets
from pnp_ovss.datasets import get_dataset
from pnp_ovss.report import make_report_figures, write_parameters_table
from pnp_ovss.workflow import stage_logger

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "report")
out = Path(sm.output.parameters).parent
made = make_report_figures(
    get_dataset(sm.config),
    [Path(str(sm.input.masks))],
    list(sm.params.ids),
    Path(sm.input.per_class) if "per_class" in sm.input.keys() else None,
    out,
    samples=int(sm.params.samples),
)
Path(sm.output.overlays).mkdir(parents=True, exist_ok=True)
write_parameters_table(dict(sm.params.run), sm.output.parameters)
log.info("%d overlays, chart %s", len(made["overlays"]), made["iou_chart"] or "none (no ground truth)")
# the report of an earlier image set of the same parameters would show images no longer in the run
remove_other_sets(out.parent, out.name)

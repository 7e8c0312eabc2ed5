"""Rule report_figures: overlays, per-class IoU chart and run parameters (logic in pnp_ovss.report)."""
from pathlib import Path

from pnp_ovss.entries import remove_other_sets
from pnp_ovss.report import make_report_figures, write_parameters_table
from pnp_ovss.stages.job import JobContext

job = JobContext.from_snakemake(snakemake, "report")  # noqa: F821 (injected by Snakemake)
sm_in, sm_out = job.snakemake.input, job.snakemake.output
out = Path(sm_out.parameters).parent
made = make_report_figures(
    job.dataset,
    [Path(str(sm_in.masks))],
    list(job.params.ids),
    Path(sm_in.per_class) if "per_class" in sm_in.keys() else None,  # noqa: SIM118 (a Namedlist)
    out,
    samples=int(job.params.samples),
)
Path(sm_out.overlays).mkdir(parents=True, exist_ok=True)
write_parameters_table(dict(job.params.run), sm_out.parameters)
job.log.info("%d overlays, chart %s", len(made["overlays"]), made["iou_chart"] or "none (no ground truth)")
# the report of an earlier image set of the same parameters would show images no longer in the run
remove_other_sets(out.parent, out.name)

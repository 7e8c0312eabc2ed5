# Report: per run, overlays of a sample of images (prediction beside ground truth where there is one), the
# per-class IoU bar chart (runs with ground truth) and the run's parameters; `snakemake --report report.html`
# collects them. results/<dataset>/latest/ holds the masks of the current runs by image name.

_REPORT_INPUTS = {"masks": lambda wc: PLAN.masks_view(PLAN.upstream(wc.eh))}
_REPORT_OUTPUTS = {
    "overlays": report(
        directory(f"{OUT}/report/{{eh}}/{{view}}/{OVERLAYS_DIR}"),
        patterns=["{name}.png"],
        caption="../workflow/report/overlays.rst",
        category="Overlays",
        subcategory="run {eh}",
    ),
    "parameters": report(
        f"{OUT}/report/{{eh}}/{{view}}/{PARAMETERS_CSV}",
        caption="../workflow/report/parameters.rst",
        category="Parameters",
        subcategory="run {eh}",
    ),
}
if PLAN.evaluates:  # with ground truth: the per-class IoU chart of the run's evaluation
    _REPORT_INPUTS["per_class"] = f"{EVALUATE_DIR}/{{eh}}/{{view}}/{PER_CLASS_CSV}"
    _REPORT_OUTPUTS["chart"] = report(
        f"{OUT}/report/{{eh}}/{{view}}/{CHART_PNG}",
        caption="../workflow/report/per_class_iou.rst",
        category="Per-class IoU",
        subcategory="run {eh}",
    )


rule report_figures:
    input:
        **_REPORT_INPUTS,
    output:
        **_REPORT_OUTPUTS,
    log:
        f"{OUT}/logs/report/{{eh}}/{{view}}.log",
    benchmark:
        f"{OUT}/benchmarks/report/{{eh}}/{{view}}.tsv"
    params:
        run=lambda wc: PLAN.run_parameters(wc.eh),
        ids=PLAN.image_ids,
        samples=config["report"]["samples"],
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/report.py"


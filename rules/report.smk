# Report: per run, overlays of a sample of images (prediction beside ground truth), the per-class IoU
# bar chart and the run's parameters; `snakemake --report report.html` collects them.


rule report_figures:
    input:
        per_class=f"{OUT}/eval/{{eh}}/per_class_iou.csv",
        masks=lambda wc: [f"{OUT}/masks/{PLAN.upstream(wc.eh)}/{shard}" for shard in SHARDS],
    output:
        overlays=report(
            directory(f"{OUT}/report/{{eh}}/overlays"),
            patterns=["{name}.png"],
            caption="../workflow/report/overlays.rst",
            category="Overlays",
            subcategory="run {eh}",
        ),
        chart=report(
            f"{OUT}/report/{{eh}}/per_class_iou.png",
            caption="../workflow/report/per_class_iou.rst",
            category="Per-class IoU",
            subcategory="run {eh}",
        ),
        parameters=report(
            f"{OUT}/report/{{eh}}/parameters.csv",
            caption="../workflow/report/parameters.rst",
            category="Parameters",
            subcategory="run {eh}",
        ),
    log:
        f"{OUT}/logs/report/{{eh}}.log",
    params:
        run=lambda wc: PLAN.run_parameters(wc.eh),
        ids=PLAN.image_ids,
        samples=config["report"]["samples"],
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/report.py"

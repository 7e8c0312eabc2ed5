# Report: per run, overlays of a sample of images (prediction beside ground truth) and the per-class IoU
# bar chart; `snakemake --report report.html` collects them with the run parameters.


rule report_figures:
    input:
        per_class=f"{OUT}/eval/{{eh}}/per_class_iou.csv",
        miou=f"{OUT}/eval/{{eh}}/miou.csv",
        masks=lambda wc: [f"{OUT}/masks/{PLAN.upstream(wc.eh)}/{shard}" for shard in SHARDS],
    output:
        report(
            directory(f"{OUT}/report/{{eh}}"),
            patterns=["{name}.png"],
            caption="../workflow/report/figures.rst",
            category="Segmentation",
            subcategory="run {eh}",
        ),
    log:
        f"{OUT}/logs/report/{{eh}}.log",
    params:
        stage=lambda wc: stage_params(wc.eh),
        samples=config["report"]["samples"],
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/report.py"

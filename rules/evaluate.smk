# Evaluate: a confusion matrix per shard job (evaluate/<hash>/shards/<job>.npz, named by the shard's images and
# their masks), summed into miou.csv / per_class_iou.csv per run (evaluate/<hash>/set-<key>/), and one
# dataset-level miou.csv with a row per run (sweep combination).


rule evaluate_shard:
    input:
        masks=lambda wc: PLAN.upstream_output(wc.eh, wc.job),
    output:
        f"{EVALUATE_DIR}/{{eh}}/shards/{{job}}.npz",
    log:
        f"{OUT}/logs/evaluate/{{eh}}/{{job}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{eh}}/{{job}}.tsv"
    params:
        stage=lambda wc: PLAN.table[wc.eh],
        ids=job_ids,
        work=lambda wc: PLAN.job_work(wc.eh, wc.job),
        upstream_dir=lambda wc: PLAN.upstream_dir(wc.eh),
    threads: 1
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/evaluate_shard.py"


rule evaluate:
    input:
        shards=lambda wc: PLAN.all_jobs(wc.eh),
    output:
        miou=report(
            f"{EVALUATE_DIR}/{{eh}}/{{view}}/{MIOU_CSV}",
            caption="../workflow/report/miou.rst",
            category="mIoU",
            subcategory="run {eh}",
        ),
        per_class=f"{EVALUATE_DIR}/{{eh}}/{{view}}/{PER_CLASS_CSV}",
        skipped=f"{EVALUATE_DIR}/{{eh}}/{{view}}/{SKIPPED_CSV}",
    log:
        f"{OUT}/logs/evaluate/{{eh}}/{{view}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate-tables/{{eh}}/{{view}}.tsv"
    params:
        stage=lambda wc: PLAN.table[wc.eh],
        run=lambda wc: PLAN.run_parameters(wc.eh),
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/evaluate.py"


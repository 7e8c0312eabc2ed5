# Evaluate: a confusion matrix per shard, summed into miou.csv / per_class_iou.csv per run, and one
# dataset-level miou.csv with a row per run (sweep combination).


rule evaluate_shard:
    input:
        masks=lambda wc: f"{OUT}/masks/{PLAN.upstream(wc.eh)}/{wc.shard}",
    output:
        f"{OUT}/eval/{{eh}}/{{shard}}.npz",
    log:
        f"{OUT}/logs/evaluate/{{eh}}/{{shard}}.log",
    params:
        stage=lambda wc: stage_params(wc.eh),
        ids=shard_ids,
    threads: 1
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/evaluate_shard.py"


rule evaluate:
    input:
        shards=expand(f"{OUT}/eval/{{{{eh}}}}/{{shard}}.npz", shard=SHARDS),
    output:
        miou=f"{OUT}/eval/{{eh}}/miou.csv",
        per_class=f"{OUT}/eval/{{eh}}/per_class_iou.csv",
        skipped=f"{OUT}/eval/{{eh}}/skipped.csv",
    log:
        f"{OUT}/logs/evaluate/{{eh}}/summary.log",
    params:
        stage=lambda wc: stage_params(wc.eh),
        run=lambda wc: PLAN.run_parameters(wc.eh),
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/evaluate.py"


rule miou_table:
    input:
        [f"{OUT}/eval/{run.evaluate}/miou.csv" for run in PLAN.runs],
    output:
        report(
            f"{OUT}/miou.csv",
            caption="../workflow/report/miou.rst",
            category="mIoU",
        ),
    log:
        f"{OUT}/logs/evaluate/miou_table.log",
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/miou_table.py"

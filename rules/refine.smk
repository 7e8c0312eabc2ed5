# Refine: threshold, upsample, background channel, blur, DenseCRF -> palette PNG label maps (CPU).
# Maps are written to a work folder beside the output (kept if the job dies) and renamed into place.


rule refine:
    input:
        store=lambda wc: f"{OUT}/gradcam/{PLAN.upstream(wc.rh)}/{wc.shard}",
    output:
        directory(f"{OUT}/masks/{{rh}}/{{shard}}"),
    log:
        f"{OUT}/logs/refine/{{rh}}/{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/refine/{{rh}}/{{shard}}.tsv"
    params:
        stage=lambda wc: stage_params(wc.rh),
        ids=shard_ids,
        work=lambda wc: f"{OUT}/masks/{wc.rh}/work/{wc.shard}",
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/refine.py"

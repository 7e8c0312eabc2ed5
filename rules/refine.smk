# Refine: threshold, upsample, background channel, blur, DenseCRF -> palette PNG label maps (CPU), one per
# image under refine/<hash>/images/<key>.png (written atomically); a job refines the images of its shard that
# have no map yet. refine/<hash>/set-<key>/ holds the run's masks by image name (copies).


rule refine:
    input:
        gradcam=lambda wc: PLAN.upstream_output(wc.rh, wc.job),
    output:
        f"{REFINE_DIR}/{{rh}}/jobs/{{job}}.json",
    log:
        f"{OUT}/logs/refine/{{rh}}/{{job}}.log",
    benchmark:
        f"{OUT}/benchmarks/refine/{{rh}}/{{job}}.tsv"
    params:
        stage=lambda wc: PLAN.table[wc.rh],
        ids=job_ids,
        work=lambda wc: PLAN.job_work(wc.rh, wc.job),
        upstream_dir=lambda wc: PLAN.upstream_dir(wc.rh),
    threads: 1
    resources:
        mem_mb=lambda wc: PLAN.refine_mem_mb(wc.rh, wc.job),  # its largest image (docs/performance.md "Refine speed")
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/refine.py"


rule masks:
    input:
        lambda wc: PLAN.all_jobs(wc.rh),
    output:
        directory(f"{REFINE_DIR}/{{rh}}/{{view}}"),
    log:
        f"{OUT}/logs/refine/{{rh}}/{{view}}.log",
    benchmark:
        f"{OUT}/benchmarks/masks/{{rh}}/{{view}}.tsv"
    params:
        ids=lambda wc: PLAN.image_ids,
        refine_keys=lambda wc: PLAN.stage_keys(wc.rh),
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/masks.py"

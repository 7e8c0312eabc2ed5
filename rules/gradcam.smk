# GradCAM + Salience Drop on BLIP ITM cross-attention; per-image maps and dropped patches in Zarr stores
# (gradcam/<hash>/images/<key>.zarr, each renamed into place when written). A job covers one shard and runs
# only the images (faithful: the batches) without a store, so a killed job resumes where it stopped.


rule gradcam:
    input:
        labels=lambda wc: PLAN.upstream_output(wc.gh, wc.job),
    output:
        f"{OUT}/gradcam/{{gh}}/jobs/{{job}}.json",
    log:
        f"{OUT}/logs/gradcam/{{gh}}/{{job}}.log",
    benchmark:
        f"{OUT}/benchmarks/gradcam/{{gh}}/{{job}}.tsv"
    params:
        stage=lambda wc: PLAN.table[wc.gh],
        ids=job_ids,
        work=lambda wc: PLAN.job_work(wc.gh, wc.job),
        upstream_dir=lambda wc: PLAN.upstream_dir(wc.gh),
        device=config["gradcam"]["device"],
    threads: MODEL_JOB_THREADS  # GPU: a few (gradcam.threads); CPU: every core (capped at --cores)
    resources:
        gpu=MODEL_JOB_GPUS,
        mem_mb=16000,
    priority: PRIORITY["model"]
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/gradcam.py"

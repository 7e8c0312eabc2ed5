# The annotation-free search (`snakemake search`, issue #11): per shard, the one-pass maps of every searched
# (layer, head) for the first `search.images` images (search/<hash>/images/<key>.zarr); then one job scores
# the settings with the CLIP weak reward (ALGORITHM.md §8) through an Optuna study kept beside its outputs
# (rewards.csv, best.yaml — a --configfile for the pipeline — summary.csv and two figures).


rule search_maps:
    input:
        labels=lambda wc: PLAN.upstream_output(wc.mh, wc.job),
    output:
        f"{OUT}/search/{{mh}}/jobs/{{job}}.json",
    log:
        f"{OUT}/logs/search/{{mh}}/{{job}}.log",
    benchmark:
        f"{OUT}/benchmarks/search/{{mh}}/{{job}}.tsv"
    params:
        stage=lambda wc: PLAN.table[wc.mh],
        ids=job_ids,
        work=lambda wc: PLAN.job_work(wc.mh, wc.job),
        upstream_dir=lambda wc: PLAN.upstream_dir(wc.mh),
        device=config["gradcam"]["device"],
        batch_size=config["search"]["batch_size"],
    threads: MODEL_JOB_THREADS  # as the gradcam jobs
    resources:
        gpu=MODEL_JOB_GPUS,
        mem_mb=16000,
    priority: PRIORITY["model"]
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/search_maps.py"


rule search_score:
    input:
        maps=lambda wc: PLAN.all_jobs(wc.mh),
    output:
        rewards=f"{OUT}/search/{{mh}}/{{score}}/{REWARDS_CSV}",
        best=f"{OUT}/search/{{mh}}/{{score}}/{BEST_YAML}",
        summary=f"{OUT}/search/{{mh}}/{{score}}/{SUMMARY_CSV}",
        heatmap=report(f"{OUT}/search/{{mh}}/{{score}}/{HEATMAP_PNG}", category="Search", caption="../workflow/report/search.rst"),
        thresholds=report(f"{OUT}/search/{{mh}}/{{score}}/{THRESHOLD_PNG}", category="Search", caption="../workflow/report/search.rst"),
    log:
        f"{OUT}/logs/search/{{mh}}/{{score}}.log",
    benchmark:
        f"{OUT}/benchmarks/search/{{mh}}/{{score}}.tsv"
    params:
        stage=lambda wc: PLAN.search.score_params,
        maps_params=lambda wc: PLAN.table[wc.mh],
        ids=PLAN.search.image_ids,
        image_keys=lambda wc: {i: PLAN.image_key(wc.mh, i) for i in PLAN.search.image_ids},
        maps_dir=lambda wc: PLAN.stage_dir("search", wc.mh),
        device=config["gradcam"]["device"],
        batch_size=config["search"]["batch_size"],
    threads: MODEL_JOB_THREADS  # as the gradcam jobs
    resources:
        gpu=MODEL_JOB_GPUS,
        mem_mb=16000,
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/search.py"


rule search:
    input:
        list(PLAN.search.outputs().values()),
    default_target: False

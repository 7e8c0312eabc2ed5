# GradCAM + Salience Drop on BLIP ITM cross-attention; per-image maps and dropped patches in Zarr.
# The shard folder is the declared output (the store lives inside it); per-image progress lives in
# the work area beside it, so a killed job resumes at the first unfinished image.


rule gradcam:
    input:
        labels=lambda wc: f"{OUT}/labels/{PLAN.upstream(wc.gh)}/{wc.shard}.json",
    output:
        directory(f"{OUT}/gradcam/{{gh}}/{{shard}}"),
    log:
        f"{OUT}/logs/gradcam/{{gh}}/{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/gradcam/{{gh}}/{{shard}}.tsv"
    params:
        stage=lambda wc: stage_params(wc.gh),
        ids=shard_ids,
        work=lambda wc: f"{OUT}/gradcam/{wc.gh}/work/{wc.shard}",
        device=config["gradcam"]["device"],
    threads: 256  # capped at --cores: a CPU gradcam job uses the whole machine
    resources:
        gpu=lambda wc: 0 if config["gradcam"]["device"] == "cpu" else 1,
        mem_mb=16000,
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/gradcam.py"

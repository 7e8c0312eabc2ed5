# Labels: which classes are in each image (authors' GPT-4o answers, live GPT-4o, ground truth, a list).


rule labels:
    output:
        f"{OUT}/labels/{{lh}}/{{shard}}.json",
    log:
        f"{OUT}/logs/labels/{{lh}}/{{shard}}.log",
    params:
        stage=lambda wc: stage_params(wc.lh),
        ids=shard_ids,
        cache=lambda wc: f"{OUT}/labels/{wc.lh}/cache",
    resources:
        openai=lambda wc: 1 if stage_params(wc.lh)["source"] == "gpt4o" else 0,
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/labels.py"

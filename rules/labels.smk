# Labels: which classes are in each image (authors' GPT-4o answers, live GPT-4o, ground truth, a list).
# One job per shard that has images without a labels entry; entries live per image under
# labels/<hash>/images/ and live GPT-4o answers per question under labels/gpt4o-answers/ (asked once, ever).


rule labels:
    output:
        f"{OUT}/labels/{{lh}}/jobs/{{job}}.json",
    log:
        f"{OUT}/logs/labels/{{lh}}/{{job}}.log",
    benchmark:
        f"{OUT}/benchmarks/labels/{{lh}}/{{job}}.tsv"
    params:
        stage=lambda wc: PLAN.table[wc.lh],
        ids=job_ids,
        work=lambda wc: PLAN.job_work(wc.lh, wc.job),
        answers=f"{OUT}/labels/gpt4o-answers",
    resources:
        openai=lambda wc: 1 if PLAN.table[wc.lh]["source"] == "gpt4o" else 0,
    priority: PRIORITY["labels"]
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/labels.py"

# The field's table: `snakemake --cores all table --config data_root=DATA` runs every row of `table.rows` (a config
# overlay each) on every benchmark found under data_root, one ordinary run per (row, benchmark variant) in this
# results folder (so every per-image result already there is reused), then writes results/table.csv, table.md and
# table.png beside the quoted published rows (pnp_ovss.stages.table, docs/table.md). No output: asked for, it
# always runs, and each cell's own run decides what is missing.


rule table:
    log:
        f"{config['results']}/logs/table.log",
    params:
        forwarded=forwarded_options(sys.argv[1:]),
        snakefile=str(Path(workflow.basedir) / "Snakefile"),
        workdir=os.getcwd(),
    threads: workflow.resource_settings.cores or 1  # every core given (none without --cores: --unlock, --report)
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/table.py"


# One cell of the table: this configuration's evaluation tables, computed like any run (what is missing only),
# without touching the fixed-path views of the user's own last run (CELL_ONLY in rules/common.smk).
rule table_cell:
    input:
        [f"{PLAN.eval_dir(run.evaluate)}/{MIOU_CSV}" for run in PLAN.runs] if PLAN.evaluates else [],

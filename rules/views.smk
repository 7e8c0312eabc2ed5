# Views at fixed paths (results/<dataset>/latest/, miou.csv, results/last-run.yaml; the runs.csv ledger),
# each sealed with what it shows (pnp_ovss.stages.views). Its inputs are every job's output, and its output
# is a stamp named by the state the parse found, so that whenever any job has work or a view is missing,
# stale or edited, this rule (and with it every job that has work) runs; a rerun plans nothing.

VIEW_KEYS = view_keys(PLAN, config)
VIEW_PATHS = view_paths(PLAN, config["results"])
_repairs, _notes = (check_views(PLAN, VIEW_KEYS, VIEW_PATHS, remove=REPAIRS and not CELL_ONLY)
                  if workflow.is_main_process else ([], []))
for _note in [] if TABLE_ONLY or CELL_ONLY else _notes:
    logger.warning(f"pnp-ovss: {_note}")
VIEW_STAMP, SETTLED_STAMP = views_stamps(PLAN, VIEW_KEYS, _repairs)


rule views:
    input:
        jobs=PLAN.pipeline_outputs(),
        masks=[PLAN.masks_view(h) for h in dict.fromkeys(run.refine for run in PLAN.runs)],
        tables=[f"{PLAN.eval_dir(run.evaluate)}/{MIOU_CSV}" for run in PLAN.runs]
        if PLAN.evaluates
        else [],
    output:
        f"{OUT}/{VIEWS_DIR}/{VIEW_STAMP}",
    log:
        f"{OUT}/logs/views.log",
    benchmark:
        f"{OUT}/benchmarks/views.tsv"
    params:
        view_keys=VIEW_KEYS,
        paths={k: str(v) for k, v in VIEW_PATHS.items()},
        runs={PLAN.masks_view(run.refine): PLAN.run_label(run) for run in PLAN.runs},
        parameters={PLAN.run_label(run): PLAN.run_parameters(run.evaluate) for run in PLAN.runs},
        stamps=[f"{OUT}/{VIEWS_DIR}/{VIEW_STAMP}", f"{OUT}/{VIEWS_DIR}/{SETTLED_STAMP}"],
    conda:
        "../envs/pnp-ovss.yaml"
    script:
        "../workflow/scripts/views.py"

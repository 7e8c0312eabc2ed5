# pnp-ovss: PnP-OVSS (BLIP cross-attention GradCAM + Salience Drop + DenseCRF) as a staged workflow.
#
#   snakemake --cores all                                         # the embedded demo set
#   snakemake --cores all --config dataset=coco_stuff data_root=/data
#   snakemake --cores all --config dataset=folder images=photos/ classes="cat,sofa,lamp"
#   snakemake --workflow-profile profiles/slurm --config dataset=voc data_root=/data
#
# Stages (one module each, one job per image shard): labels -> gradcam -> refine -> evaluate -> report.
# Every stage folder is keyed by a hash of its parameters and its upstream stage's hash, so a parameter
# change reruns only what it affects. See README.md and docs/ARCHITECTURE.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/labels.smk"
include: "rules/gradcam.smk"
include: "rules/refine.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/search.smk"
include: "rules/views.smk"
include: "rules/table.smk"


# Summing confusion matrices and concatenating one-line tables take milliseconds: never submit them.
localrules:
    all,
    search,
    evaluate,
    masks,
    views,
    table,
    table_cell,


rule all:
    input:
        final_targets(),
    default_target: True


report: "workflow/report/workflow.rst"


onsuccess:
    from pnp_ovss.summary import outputs_summary, skipped_summary

    if TABLE_ONLY or CELL_ONLY:  # the table job says what its cells found (rules/table.smk)
        return

    _skipped = skipped_summary(
        [f"{OUT}/{LATEST_DIR}/{PLAN.run_label(run)}/{SKIPPED_CSV}".replace("//", "/") for run in PLAN.runs]
    )
    if _skipped:
        print(f"pnp-ovss: {_skipped}", file=sys.stderr)
    if Path(f"{OUT}/{VIEWS_DIR}/{SETTLED_STAMP}").is_file():  # the pipeline's views were made (not only `search`)
        for _line in outputs_summary(VIEW_PATHS, PLAN.evaluates, config["dataset"]):
            print(f"pnp-ovss: {_line}", file=sys.stderr)


onerror:
    from pnp_ovss.summary import failure_lines

    _text = ""
    for _log in [log] if isinstance(log, str) else list(log):
        try:
            _text += Path(_log).read_text(errors="replace")
        except OSError:
            pass
    _lines = failure_lines(_text, config["on_error"], Path(workflow.basedir))
    if _lines:
        # on stderr, with Snakemake's own messages, so that it is the end of the console
        print("pnp-ovss: why the run stopped (one line per failed job):", file=sys.stderr)
        for _line in _lines:
            print(f"  {_line}", file=sys.stderr)

# Parse-time plan: config validation, image order, shards, sweep runs and stage hashes.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.utils import validate

from pnp_ovss.checks import Preflight, preflight
from pnp_ovss.config import coerce_to_schema, fold_dotted, load_schema, normalise
from pnp_ovss.config import SIZED_FOR_ENV, backend_name, gpu_visible, model_job_threads, model_jobs_on_gpu
from pnp_ovss.config import profile_gives_gpu, resolve_fixes
from pnp_ovss.layout import (
    BEST_YAML, VIEWS_DIR, CHART_PNG, HEATMAP_PNG, LAST_RUN_YAML, LATEST_DIR, MIOU_CSV, OVERLAYS_DIR, PARAMETERS_CSV,
    PER_CLASS_CSV, REWARDS_CSV, SKIPPED_CSV, SUMMARY_CSV, THRESHOLD_PNG,
)
from pnp_ovss.backends.checkpoints import check_model_choice, unknown_piece_warnings
from pnp_ovss.plan import STALE_SUFFIX, check_views, make_plan, plan_summary, plan_warnings, sync_job_records
from pnp_ovss.plan import view_keys, view_paths, views_stamps
from pnp_ovss.forwarding import forwarded_options

# `--config refine="{threshold: 0.3}"` arrives with string leaves, and dotted keys (from a config file
# or the API) are nested sections: normalise both before validating.
_normalised = coerce_to_schema(fold_dotted(dict(config)), load_schema())
config.clear()
config.update(_normalised)
# a bad value stops here with its key and what is allowed (ConfigError), before Snakemake's long report
normalise(dict(config))
validate(config, schema="../config/schema.yaml", set_default=True)



def only_looks():
    """A parse that only looks writes nothing under results/: `snakemake -n` (Snakemake says so at parse
    time: output_settings.dryrun), `--lint` (the one mode that parses with check_envvars off) and `--report`
    without --report-after-run (Snakemake gives a parse no sign of it but its command line)."""
    argv = sys.argv[1:]
    report_only = any(a == "--report" or a.startswith("--report=") for a in argv) and "--report-after-run" not in argv
    return bool(workflow.output_settings and workflow.output_settings.dryrun) or not workflow.check_envvars or report_only


def model_jobs_sized_for_gpu():
    """Whether the model jobs (gradcam, search maps) are cut for a GPU (config model_jobs.sized_for): decided by
    the main snakemake process — from the config, the profile's resources for gradcam, this machine — and
    handed to its jobs' own parses (on SLURM nodes, which may see a GPU the login node lacks) through
    SIZED_FOR_ENV, so that every parse cuts the same jobs."""
    inherited = os.environ.get(SIZED_FOR_ENV)
    if not workflow.is_main_process and inherited in ("gpu", "cpu"):
        return inherited == "gpu"
    profile = profile_gives_gpu(workflow.resource_settings.overwrite_resources)
    on_gpu = model_jobs_on_gpu(config, gpu_visible(), profile)
    os.environ[SIZED_FOR_ENV] = "gpu" if on_gpu else "cpu"
    return on_gpu


MODEL_ON_GPU = model_jobs_sized_for_gpu()
if config["gradcam"]["device"] == "cpu" and profile_gives_gpu(workflow.resource_settings.overwrite_resources):
    logger.warning("pnp-ovss: gradcam.device is cpu but the resources (a profile's set-resources) ask a GPU for the "
                   "gradcam jobs: set `gpu: 0` for gradcam and search_maps there, or gradcam.device auto")


envvars:
    SIZED_FOR_ENV,


def command_line_targets():
    """The targets of this snakemake command line (the main process only; empty when started through the API).
    The workflow is not told its targets while it is parsed: they are read as Snakemake's CLI reads them."""
    if not workflow.is_main_process:
        return set()
    try:
        from snakemake.cli import get_argument_parser

        return set(get_argument_parser().parse_known_args(sys.argv[1:])[0].targets or ())
    except (SystemExit, Exception):  # started through the API, or a command line Snakemake itself refuses
        return set()


TARGETS = command_line_targets()
# `snakemake table` alone: its cells are ordinary runs of their own (rules/table.smk), so this parse's own
# configuration is only planned to define the rules: it writes, repairs and reports nothing
TABLE_ONLY = bool(TARGETS) and TARGETS <= {"table"}
# one cell of the table (rules/table.smk, table_cell): computes and evaluates what is missing like any run, but
# leaves the fixed-path views (latest/, miou.csv, last-run.yaml) to the user's own last run
CELL_ONLY = TARGETS == {"table_cell"}
LOOKS_ONLY = only_looks() or TABLE_ONLY
# only the main snakemake process repairs anything (sets damaged entries aside, writes job records): a
# cluster job's own parse of this file runs beside other jobs and must not touch what they write
REPAIRS = workflow.is_main_process and not LOOKS_ONLY
PLAN = make_plan(config, repair=REPAIRS, write_memos=not LOOKS_ONLY, looks_only=LOOKS_ONLY, model_on_gpu=MODEL_ON_GPU)
# threads of the model rules (gradcam, search maps): a few on a GPU so that refine/evaluate/labels jobs fill
# the other cores meanwhile, every core on the CPU (config gradcam.threads overrides)
MODEL_JOB_THREADS = model_job_threads(config["gradcam"], MODEL_ON_GPU)
# the GPUs a model job takes (resources: gpu): one, unless it runs on the CPU; a simulated GPU (gradcam.simulate_gpu,
# benchmarks/pipeline_speed.py) is taken like a real one, one job at a time
MODEL_JOB_GPUS = 0 if config["gradcam"]["device"] == "cpu" and config["gradcam"].get("simulate_gpu") is None else 1
# among the jobs ready to start: a model job first (the GPU must not wait), then labels (the next model job's
# images), then the CPU stages behind them
PRIORITY = {"model": 20, "labels": 10}
# a shard job whose images all have results is recorded as done here (so it is not planned); a record
# whose results were deleted is removed (so its job runs again)
if REPAIRS:
    sync_job_records(PLAN)
elif LOOKS_ONLY and not TABLE_ONLY and PLAN.stale_records():
    # (a job with no work and no record is not asked for, so it is not planned either: Plan.requested)
    logger.warning(f"pnp-ovss: {len(PLAN.stale_records())} job record(s) say done while images lack results; a "
                   f"run removes them and runs those jobs (listed here as writing <record>{STALE_SUFFIX}.json): "
                   f"{', '.join(PLAN.stale_records()[:3])}")
if not TABLE_ONLY:
    logger.info(f"pnp-ovss: {plan_summary(PLAN)}")
    for _note in PLAN.notes:
        logger.warning(f"pnp-ovss: {_note}")
if not TABLE_ONLY and any(job.needed for jobs in PLAN.stage_jobs.values() for job in jobs if job.stage == "gradcam"):
    # the model directory and the image size are checked before any job is scheduled
    check_model_choice(config["gradcam"]["model"], config["gradcam"]["image_size"], backend_name(config))
    if config["dataset"] == "folder":  # the user's own words: say which the tokenizer does not know
        _keep = resolve_fixes(config)["keep_spaces"]
        for _warning in unknown_piece_warnings(config["gradcam"]["model"], list(PLAN.dataset.vocabulary.names), _keep):
            logger.warning(f"pnp-ovss: {_warning}")
# every other problem knowable before the first job, all named at once (pnp_ovss.checks); what this machine lacks
# (a model neither cached nor downloadable) is named here and stops a run before the first job that needs it
PREFLIGHT = Preflight() if TABLE_ONLY else preflight(PLAN, backend_name(config))
for _note in PREFLIGHT.notes:
    logger.info(f"pnp-ovss: {_note}")
for _warning in PREFLIGHT.warnings + ([] if TABLE_ONLY else plan_warnings(PLAN.cfg)):
    logger.warning(f"pnp-ovss: {_warning}")
OUT = PLAN.out
#: the refine and evaluate stages' folders (results from before their renaming are read where they are in a dry run)
REFINE_DIR = f"{OUT}/{PLAN.folders['refine']}"
EVALUATE_DIR = f"{OUT}/{PLAN.folders['evaluate']}"
HASH = "[0-9a-f]{10}"


onstart:
    PREFLIGHT.refuse_jobs({job.rule.name for job in workflow.dag.needrun_jobs()})


wildcard_constraints:
    job=r"shard-\d{4}-[0-9a-f]{16}(\.stale)?",  # .stale: a dry run's name for a job whose record is stale (Plan.looks_only)
    view=r"set-[0-9a-f]{16}",
    lh=HASH,
    gh=HASH,
    rh=HASH,
    eh=HASH,
    mh=HASH,
    score=r"score-[0-9a-f]{16}",


def job_ids(wildcards):
    """The images of a shard job (which of them still need work is decided again when the job runs)."""
    stage_hash = next(getattr(wildcards, w) for w in ("lh", "gh", "rh", "eh", "mh") if hasattr(wildcards, w))
    return PLAN.job(stage_hash, wildcards.job).ids


def final_targets():
    """Per run: the report (overlays, parameters; with ground truth the evaluation tables and the per-class
    chart); the masks by image name (results/<dataset>/latest/); the dataset-level miou.csv with one row
    per run (sweep combination) where there is ground truth."""
    targets = [f"{OUT}/{VIEWS_DIR}/{VIEW_STAMP}"]  # latest/, miou.csv, last-run.yaml (rules/views.smk)
    targets += [f"{PLAN.report_dir(run.evaluate)}/{PARAMETERS_CSV}" for run in PLAN.runs]
    if PLAN.evaluates:
        targets += [f"{PLAN.report_dir(run.evaluate)}/{CHART_PNG}" for run in PLAN.runs]
    return targets

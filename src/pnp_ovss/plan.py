"""The parse-time plan of the workflow (rules/common.smk): image order, shards, runs, stage hashes, per-image
keys and, per stage and shard, the job that computes the images without a result. The rules ask it for job
ids, keys and paths. What a running job needs (its logger, threads, parameters file) is in
:mod:`pnp_ovss.stages.job`.

Plain Python (no Snakemake import), so it is testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from .layout import LEGACY_STAGE_FOLDER, STAGE_FOLDER, TABLE_COLUMNS
from .entries import SUFFIX, check_entry, entries_dir, is_done, listing, names_in, set_aside, write_job_record
from .config import SWEEPABLE, Run, flat_run_parameters, model_job_images, normalise, plan_runs, resolve_fixes
from .config import resolved_label_source
from .datasets import Dataset, get_dataset
from .datasets.base import scan_images
from .identity import (
    DIGEST_CACHE_NAME,
    HEADER_CACHE_NAME,
    DigestCache,
    HeaderCache,
    annotation_files,
    files_digest,
    gradcam_keys,
    job_name,
    key_of,
    set_name,
)
from .ordering import faithful_order, group_shards, make_shards, shard_name


#: the record name under which a dry run asks for a job whose record is stale (:attr:`Plan.looks_only`)
STALE_SUFFIX = ".stale"
#: the stages whose jobs load a model (sized by ``model_jobs``: many images per job on a GPU); the others are
#: cut by shard (``shard_size``)
MODEL_STAGES = ("gradcam", "search")
#: refine's peak memory per pixel of the image (DenseCRF at full resolution; benchmarks/refine_memory.py)
REFINE_BYTES_PER_PIXEL = 318


@dataclass
class StageJob:
    """One job of one stage: its images (one shard; a model stage's job: consecutive whole shards), their keys
    at this stage, the upstream stage's jobs that hold them and their keys there, and which lack a result."""

    stage: str
    stage_hash: str
    shard: str  # the job's shard, or its shards (``shard-0003..0009``); its name starts with the first
    name: str
    ids: list[str]
    keys: dict[str, str]
    upstream: "list[StageJob]"
    missing: list[str]
    recorded: bool = False  # the job's output (its record) exists
    upstream_keys: dict[str, str] | None = None
    shards: list[str] = field(default_factory=list)  # the shards it holds (``shard`` names them for people)

    @property
    def needed(self) -> bool:
        return bool(self.missing)


@dataclass
class Plan:
    """What the workflow does for a config: image order, shards, runs, stage parameters and, per stage and
    shard, the job that computes the images without a result (docs/ARCHITECTURE.md "Reruns")."""

    cfg: dict
    dataset: Dataset
    image_ids: list[str]
    shards: dict[str, list[str]]
    runs: list[Run]
    table: dict[str, dict]
    out: str = field(default="")
    jobs: dict[tuple[str, str], StageJob] = field(default_factory=dict)
    stage_jobs: dict[str, list[StageJob]] = field(default_factory=dict)
    views: dict[str, str] = field(default_factory=dict)  # refine hash -> masks view folder name
    eval_sets: dict[str, str] = field(default_factory=dict)  # evaluate hash -> result folder name
    search: "SearchPlan | None" = None
    notes: list[str] = field(default_factory=list)  # what the parse says about the images (not used, first frames)
    entry_digests: dict[tuple[str, str], str] = field(default_factory=dict)  # (stage hash, image id) -> digest
    repair: bool = True  # set damaged entries aside (only the main snakemake process does)
    #: a parse that writes nothing (``-n``, ``--lint``, ``--report``): a stale record (:meth:`stale_records`)
    #: cannot be removed, so the rules ask for the job under another record name (:data:`STALE_SUFFIX`), which
    #: is missing, and the dry run lists the job that a real run will run
    looks_only: bool = False
    #: stage -> its folder under ``out`` (:func:`stage_folders`; the rules spell paths with these)
    folders: dict[str, str] = field(default_factory=lambda: dict(STAGE_FOLDER))
    #: the shards of each model stage job (:data:`MODEL_STAGES`), in order
    model_groups: list[list[str]] = field(default_factory=list)
    #: whether the model jobs were sized for a GPU (``model_jobs.sized_for``)
    model_on_gpu: bool = False

    @property
    def evaluates(self) -> bool:
        return self.dataset.has_ground_truth

    def upstream(self, stage_hash: str) -> str:
        return self.table[stage_hash]["upstream"]

    def run_of(self, evaluate_hash: str) -> Run:
        for run in self.runs:
            if run.evaluate == evaluate_hash:
                return run
        raise KeyError(evaluate_hash)

    def run_parameters(self, evaluate_hash: str) -> dict:
        params = flat_run_parameters(self.table, self.run_of(evaluate_hash))
        params["image_set"] = self.eval_sets.get(evaluate_hash, "")
        return params

    # --- jobs --------------------------------------------------------------------------------------
    def stage_dir(self, stage: str, stage_hash: str) -> str:
        return f"{self.out}/{self.folders[stage]}/{stage_hash}"

    def job(self, stage_hash: str, name: str) -> StageJob:
        try:
            return self.jobs[(stage_hash, name.removesuffix(STALE_SUFFIX))]
        except KeyError:
            raise KeyError(f"no job {name} for stage folder {stage_hash} in this configuration") from None

    def run_label(self, run: Run) -> str:
        """A run's folder name under latest/: the values of the swept keys (``threshold=0.1``), or ``""``
        when the config sweeps nothing."""
        parts = []
        for section, keys in SWEEPABLE.items():
            for key in keys:
                if isinstance(self.cfg[section][key], list):
                    stage = "gradcam" if section == "gradcam" else "refine"
                    parts.append(f"{key}={self.table[getattr(run, stage)][key]}")
        return ",".join(parts)

    def image_key(self, stage_hash: str, image_id: str) -> str:
        """An image's key at a stage folder (its entry is ``<stage folder>/images/<key>.<ext>``)."""
        for job in self.stage_jobs[stage_hash]:
            if image_id in job.keys:
                return job.keys[image_id]
        raise KeyError(f"{image_id}: not an image of this run")

    def records_dir(self, stage: str, stage_hash: str) -> str:
        """Where a stage's job outputs are: records (``jobs/``), or per-shard confusion matrices (``shards/``)."""
        return f"{self.stage_dir(stage, stage_hash)}/{'shards' if stage == 'evaluate' else 'jobs'}"

    def record_path(self, job: StageJob) -> str:
        """Where a job's record (or an evaluation job's confusion matrix) is on disk."""
        suffix = ".npz" if job.stage == "evaluate" else ".json"
        return f"{self.records_dir(job.stage, job.stage_hash)}/{job.name}{suffix}"

    @staticmethod
    def record_is_stale(job: StageJob) -> bool:
        """The job's record says done while some of its images lack results (entries deleted or set aside)."""
        return job.stage != "evaluate" and job.needed and job.recorded

    def job_output(self, job: StageJob) -> str:
        """The output the rules ask of a job: its record, or in a parse that writes nothing the missing
        ``<record>.stale.json`` when its record is stale (so the dry run lists it)."""
        path = self.record_path(job)
        if self.looks_only and self.record_is_stale(job):
            return path.removesuffix(".json") + STALE_SUFFIX + ".json"
        return path

    def refine_mem_mb(self, stage_hash: str, name: str) -> int:
        """The memory a refine job asks for: its largest image by the fit of benchmarks/refine_memory.py
        (0.75 GiB + 318 bytes per pixel, docs/performance.md "Refine speed"), with a fifth more, and at least 4000 MB."""
        pixels = 0
        for image_id in self.job(stage_hash, name).ids:
            try:
                h, w = self.dataset.working_size(image_id)
            except Exception:  # noqa: BLE001 - an unreadable image fails in its job, with its name
                continue
            pixels = max(pixels, h * w)
        return max(4000, int((0.75 * 2**30 + REFINE_BYTES_PER_PIXEL * pixels) * 1.2 / 1e6) + 1)

    def requested(self, job: StageJob) -> bool:
        """Whether the rules ask for a job's record: when it has work or its record exists. A job with no work
        and no record is asked for by nobody, so Snakemake does not plan it; in a run that writes,
        :func:`sync_job_records` has given every such job its record first."""
        return job.needed or job.recorded

    def upstream_output(self, stage_hash: str, name: str) -> list[str]:
        """The records of the upstream stage's jobs that hold the job's images (when asked for:
        :meth:`requested`): one for a CPU stage's job, one per shard for a model job's labels."""
        return [self.job_output(up) for up in self.job(stage_hash, name).upstream if self.requested(up)]

    def pipeline_jobs(self) -> list[StageJob]:
        """The jobs `snakemake` (the default target) runs: every stage's, evaluation only with ground truth,
        not the search's."""
        return [j for j in self.jobs.values() if j.stage != "search" and (j.stage != "evaluate" or self.evaluates)]

    def pipeline_outputs(self) -> list[str]:
        """The records of the pipeline's jobs that are asked for (:meth:`requested`): the views rule's input."""
        return [self.job_output(j) for j in self.pipeline_jobs() if self.requested(j)]

    def all_jobs(self, stage_hash: str) -> list[str]:
        """The records of a stage folder's jobs that are asked for (:meth:`requested`)."""
        return [self.job_output(j) for j in self.stage_jobs[stage_hash] if self.requested(j)]

    def stale_records(self) -> list[str]:
        """Records that say a job is done while some of its images lack results (entries deleted or set
        aside): :func:`sync_job_records` removes them in a run that writes."""
        return [self.record_path(j) for j in self.jobs.values() if self.record_is_stale(j)]

    # --- what the rules ask (rules/*.smk) ---------------------------------------------------------------
    def job_work(self, stage_hash: str, name: str) -> dict:
        """A shard job's ``params.work``: its images' keys, their keys upstream (None for labels), its shard."""
        job = self.job(stage_hash, name)
        return {"keys": job.keys, "upstream": job.upstream_keys, "shard": job.shard}

    def upstream_dir(self, stage_hash: str) -> str:
        """The stage folder the jobs of ``stage_hash`` read from (its upstream stage's ``<folder>/<hash>``)."""
        up = self.upstream(stage_hash)
        return self.stage_dir(self.table[up]["stage"], up)

    def stage_keys(self, stage_hash: str) -> dict[str, str]:
        """Every image's key at a stage folder."""
        return {i: k for job in self.stage_jobs[stage_hash] for i, k in job.keys.items()}

    def masks_view(self, refine_hash: str) -> str:
        """A run's masks by image name: ``refine/<hash>/set-<key>/`` (rule masks)."""
        return f"{self.stage_dir('refine', refine_hash)}/{self.views[refine_hash]}"

    def eval_dir(self, evaluate_hash: str) -> str:
        """A run's evaluation tables: ``evaluate/<hash>/set-<key>/`` (rule evaluate)."""
        return f"{self.stage_dir('evaluate', evaluate_hash)}/{self.eval_sets[evaluate_hash]}"

    def report_dir(self, evaluate_hash: str) -> str:
        """A run's report figures: ``report/<hash>/set-<key>/`` (rule report_figures)."""
        return f"{self.out}/report/{evaluate_hash}/{self.eval_sets[evaluate_hash]}"


@dataclass
class SearchPlan:
    """The search target: its images (the first ``search.images`` of the run's order), the maps folder hash
    and its shard jobs, and the scoring folder (named by the scoring parameters and the images' map keys)."""

    maps_hash: str
    score_params: dict
    image_ids: list[str]
    score_dir: str

    def outputs(self) -> dict[str, str]:
        from .layout import BEST_YAML, HEATMAP_PNG, REWARDS_CSV, SUMMARY_CSV, THRESHOLD_PNG

        names = {"rewards": REWARDS_CSV, "best": BEST_YAML, "summary": SUMMARY_CSV, "heatmap": HEATMAP_PNG,
                 "thresholds": THRESHOLD_PNG}
        return {k: f"{self.score_dir}/{v}" for k, v in names.items()}


def _plan_search(plan: "Plan") -> None:
    """The search's jobs: one per shard holding search images, upstream = that shard's labels job."""
    from .config import search_maps_params, search_score_params, short_hash

    cfg = plan.cfg
    ids = plan.image_ids[: int(cfg["search"]["images"])]
    wanted = set(ids)
    lh = plan.runs[0].labels
    mp = search_maps_params(cfg, lh)
    mh = short_hash(mp)
    plan.table[mh] = mp
    labels_keys = plan.stage_keys(lh)
    mkeys = {i: key_of("search", mh, labels_keys[i]) for i in ids}
    records = names_in(plan.records_dir("search", mh))
    listed = listing(plan.stage_dir("search", mh))
    jobs = []
    labels_jobs = _jobs_by_shard(plan.stage_jobs[lh])
    for shards in job_shards(plan, "search"):
        shards = [s for s in shards if any(i in wanted for i in plan.shards[s])]
        if not shards:
            continue
        sub = [i for s in shards for i in plan.shards[s] if i in wanted]
        k = {i: mkeys[i] for i in sub}
        name = job_name(shards[0], "search", mh, None, [(i, k[i]) for i in sub])
        missing = [i for i in sub if not _entry_done(plan, listed, "search", mh, None, i, k[i])]
        job = StageJob("search", mh, shard_label(shards), name, sub, k, _covering(labels_jobs, shards), missing,
                       upstream_keys={i: labels_keys[i] for i in sub}, shards=shards)
        job.recorded = Path(plan.record_path(job)).name in records
        plan.jobs[(mh, name)] = job
        jobs.append(job)
    plan.stage_jobs[mh] = jobs
    sp = search_score_params(cfg, mh)
    score_key = key_of("search-score", sp, [(i, mkeys[i]) for i in ids])[:16]
    plan.search = SearchPlan(mh, sp, ids, f"{plan.stage_dir('search', mh)}/score-{score_key}")


def ordered_ids(cfg: dict, dataset: Dataset) -> list[str]:
    """The split in the released order (faithful: randperm seed 0) or the base order (clean), limited."""
    ids = dataset.image_ids()
    if cfg["mode"] == "faithful":
        ids = faithful_order(ids)
    if cfg["limit"]:
        ids = ids[: cfg["limit"]]
    return ids


def batch_dependent(cfg: dict) -> bool:
    """Whether an image's GradCAM maps depend on the other images of its batch (§10.4: [SEP] rows ranked)."""
    return not resolve_fixes(cfg)["exclude_sep_rows"]


def effective_shard_size(cfg: dict) -> int:
    """``shard_size``, rounded up to whole batches when the maps depend on the batch (so every shard job holds
    the released batches whole, whatever ``shard_size`` says)."""
    size, batch = int(cfg["shard_size"]), int(cfg["gradcam"]["batch_size"])
    if batch_dependent(cfg) and size % batch:
        return -(-size // batch) * batch
    return size


def plan_warnings(cfg: dict) -> list[str]:
    """Settings that do not do what they say."""
    warnings = []
    batch = cfg["gradcam"]["batch_size"]
    if batch_dependent(cfg) and cfg["shard_size"] % batch:
        warnings.append(
            f"shard_size {cfg['shard_size']} is not a multiple of gradcam.batch_size {batch}: the patch ranking "
            f"depends on the batch in faithful mode (ALGORITHM.md §10.4), so each shard holds whole batches "
            f"({effective_shard_size(cfg)} images)"
        )
    return warnings


def _labels_extra(cfg: dict, dataset: Dataset, digests: DigestCache) -> tuple:
    """What every image's labels depend on beyond the stage parameters: the vocabulary and the answers file."""
    vocab = [[int(i), str(n)] for i, n in zip(dataset.vocabulary.ids, dataset.vocabulary.names)]
    source = resolved_label_source(cfg)
    answers = None
    if source == "gpt4o_file" and cfg["labels"].get("file"):
        answers = digests.digest(cfg["labels"]["file"])
    return (vocab, answers)


def _stage_keys(plan: Plan, digests: DigestCache, tags: dict[str, str | None]) -> dict[str, dict[str, str]]:
    """Per stage folder hash: each image's key at that stage (identity.py). ``tags``: what the image reader
    does to an image beyond the released reading (io.reading_tag), part of its identity only when not None."""
    cfg, dataset, ids = plan.cfg, plan.dataset, plan.image_ids
    image_path = {i: _path_or_none(dataset.image_path, i) for i in ids}
    image_digest = {i: digests.digest(image_path[i]) for i in ids}
    image_digest = {i: d if tags.get(i) is None else [d, tags[i]] for i, d in image_digest.items()}
    crf_digest = {}
    for i in ids:
        crf = _path_or_none(dataset.crf_image_path, i)
        crf_digest[i] = None if crf == image_path[i] else digests.digest(crf)
    gt_digest = {i: files_digest(digests, annotation_files(dataset, i, cfg["protocol"])) for i in ids}
    source = resolved_label_source(cfg)
    # the ground-truth oracle reads the pnp ground truth whatever the scoring protocol
    oracle = {i: files_digest(digests, annotation_files(dataset, i, "pnp")) if source == "ground_truth" else None
              for i in ids}
    extra = _labels_extra(cfg, dataset, digests)
    keys: dict[str, dict[str, str]] = {}
    for run in plan.runs:
        lh, gh, rh, eh = run.labels, run.gradcam, run.refine, run.evaluate
        if lh not in keys:
            keys[lh] = {i: key_of("labels", lh, extra, i, image_digest[i], oracle[i]) for i in ids}
        if gh not in keys:
            batch = int(plan.table[gh]["batch_size"])
            keys[gh] = gradcam_keys(gh, plan.shards, keys[lh], batch, batch_dependent(cfg))
        if rh not in keys:
            keys[rh] = {i: key_of("refine", rh, keys[gh][i], crf_digest[i]) for i in ids}
        if eh not in keys:
            keys[eh] = {i: key_of("evaluate", eh, keys[rh][i], gt_digest[i]) for i in ids}
    return keys


def _path_or_none(fn, image_id):
    try:
        return Path(fn(image_id))
    except Exception:  # noqa: BLE001 - the stage that reads the image reports the error
        return None


def _plan_jobs(plan: Plan, keys: dict[str, dict[str, str]]) -> None:
    on_error = plan.cfg["on_error"]
    listings: dict[str, set[str]] = {}
    for run in plan.runs:
        previous = None
        for stage in ("labels", "gradcam", "refine", "evaluate"):
            h = getattr(run, stage)
            if h in plan.stage_jobs:
                previous = h
                continue
            jobs = []
            # the job records are listed before the entries: a job writes its record after its last entry,
            # so a record seen here has all its entries in the listing below (no false "stale record")
            records = names_in(plan.records_dir(stage, h))
            listings[h] = listing(plan.stage_dir(stage, h)) if stage != "evaluate" else records
            up_jobs = _jobs_by_shard(plan.stage_jobs[previous]) if previous else {}
            for shards in job_shards(plan, stage):
                ids = [i for shard in shards for i in plan.shards[shard]]
                shard = shard_label(shards)
                k = {i: keys[h][i] for i in ids}
                name = job_name(shards[0], stage, h, on_error if stage == "evaluate" else None, [(i, k[i]) for i in ids])
                if stage == "evaluate":
                    npz = f"{name}.npz"
                    if npz in listings[h] and _reusable(plan, "evaluate", Path(plan.records_dir(stage, h)) / npz,
                                                        f"the evaluation of {shard}",
                                                        shard_digest(plan, previous, ids)) is None:
                        listings[h].discard(npz)
                    missing = [] if npz in listings[h] else list(ids)
                else:
                    missing = [i for i in ids if not _entry_done(plan, listings[h], stage, h, previous, i, k[i])]
                upstream = _covering(up_jobs, shards)
                job = StageJob(stage, h, shard, name, list(ids), k, upstream, missing,
                               upstream_keys={i: keys[previous][i] for i in ids} if previous else None,
                               shards=list(shards))
                job.recorded = Path(plan.record_path(job)).name in records
                plan.jobs[(h, name)] = job
                jobs.append(job)
            plan.stage_jobs[h] = jobs
            previous = h
        # a run's image set is named by its images and their keys, not by the shards: another shard_size
        # gives the same masks folder and the same tables
        ids = plan.image_ids
        plan.views[run.refine] = set_name("masks", run.refine, on_error, [(i, keys[run.refine][i]) for i in ids])
        plan.eval_sets[run.evaluate] = set_name("evaluate", run.evaluate, on_error, [(i, keys[run.evaluate][i]) for i in ids])


def job_shards(plan: Plan, stage: str) -> list[list[str]]:
    """The shards of each job of a stage: one per job, or a model stage's groups (:attr:`Plan.model_groups`)."""
    if stage in MODEL_STAGES:
        return plan.model_groups
    return [[shard] for shard in plan.shards]


def shard_label(shards: list[str]) -> str:
    """How logs and records name a job's shards: ``shard-0003``, or ``shard-0003..0009`` for several."""
    return shards[0] if len(shards) == 1 else f"{shards[0]}..{shards[-1].removeprefix('shard-')}"


def _jobs_by_shard(jobs: list[StageJob]) -> dict[str, StageJob]:
    """Each shard's job among ``jobs`` (a model job stands for each of its shards)."""
    return {shard: job for job in jobs for shard in job.shards}


def _covering(by_shard: dict[str, StageJob], shards: list[str]) -> list[StageJob]:
    """The distinct jobs (in order) that hold ``shards``."""
    out: list[StageJob] = []
    for shard in shards:
        job = by_shard.get(shard)
        if job is not None and all(job is not j for j in out):
            out.append(job)
    return out


def _entry_done(plan: Plan, names: set[str], stage: str, h: str, previous: str | None, image_id: str,
                key: str) -> bool:
    """Whether an image needs no work at a stage: a skip record (``on_error: skip``), or an entry that
    passes :func:`pnp_ovss.entries.check_entry` (a damaged one is set aside, so the job recomputes it)."""
    on_error = plan.cfg["on_error"]
    entry = f"{key}{SUFFIX[stage]}"
    if entry not in names:
        return is_done(names, stage, key, on_error)
    upstream = plan.entry_digests.get((previous, image_id)) if previous else None
    path = entries_dir(plan.stage_dir(stage, h)) / entry
    digest = _reusable(plan, stage, path, f"image {image_id}", upstream)
    if digest is None:
        names.discard(entry)
        return False
    plan.entry_digests[(h, image_id)] = digest
    return True


def _reusable(plan: Plan, stage: str, path: Path, what: str, upstream: str | None) -> str | None:
    """The entry's digest when it may be reused; else None, the entry set aside and a note naming it."""
    problem, digest = check_entry(stage, path, upstream)
    if problem is None:
        return digest
    if plan.repair:
        where = set_aside(path)
        plan.notes.append(f"{what}: {path} cannot be reused: {problem}; it is recomputed (the old one is kept "
                          f"in {where})")
    return None


def shard_digest(plan: Plan, refine_hash: str, ids: list[str]) -> str | None:
    """What an evaluation of these images is made from: the digests of their label maps (None when one is
    not known, e.g. an image skipped upstream)."""
    digests = [plan.entry_digests.get((refine_hash, i)) for i in ids]
    return None if any(d is None for d in digests) else key_of(list(zip(ids, digests)))


# --- the views (pnp_ovss.stages.views): fixed paths sealed with what they show -------------------------


def view_keys(plan: Plan, config: dict) -> dict[str, str]:
    """What each fixed-path view must show for this config: ``latest`` (each run's masks set and parameters),
    ``miou`` (each run's evaluation set), ``last_run`` (the whole ``config``)."""
    runs = [(plan.run_label(r), plan.views[r.refine], plan.eval_sets[r.evaluate], plan.run_parameters(r.evaluate))
            for r in plan.runs]
    keys = {"latest": key_of("latest", plan.out, runs), "last_run": key_of("last-run", without_scheduling(config))}
    if plan.evaluates:
        # the tables' columns are part of what the view shows: a results folder from before a column existed
        # (mBIoU) gets its dataset-level miou.csv rebuilt from the recounted tables
        keys["miou"] = key_of("miou", [(r.evaluate, plan.eval_sets[r.evaluate]) for r in plan.runs], TABLE_COLUMNS)
    return keys


def without_scheduling(config: dict) -> dict:
    """The config without the keys that only cut or place jobs (``shard_size``, ``model_jobs``,
    ``gradcam.threads``): a change
    of them alone plans nothing, not even a rewrite of ``last-run.yaml``."""
    cfg = {k: v for k, v in dict(config).items() if k not in ("shard_size", "model_jobs", "table")}
    if isinstance(cfg.get("gradcam"), dict):
        cfg["gradcam"] = {k: v for k, v in cfg["gradcam"].items() if k != "threads"}
    return cfg


def view_paths(plan: Plan, results: str) -> dict[str, Path]:
    from .layout import LAST_RUN_YAML, LATEST_DIR, MIOU_CSV

    paths = {"latest": Path(plan.out) / LATEST_DIR, "last_run": Path(results) / LAST_RUN_YAML}
    if plan.evaluates:
        paths["miou"] = Path(plan.out) / MIOU_CSV
    return paths


def check_views(plan: Plan, keys: dict[str, str], paths: dict[str, Path], remove: bool = True) -> tuple[list[str], list[str]]:
    """The fixed-path views to rebuild (missing, built for another config, edited), and the masks ``set-*``
    folders of this config whose files were edited or deleted, which are removed here (they are copies: the
    cached maps are untouched) so that their rule rebuilds them; ``remove=False`` (a parse that only looks:
    ``snakemake -n``) removes nothing. Returns (the repairs, notes naming each)."""
    from .entries import check_view, seal_path

    repairs, notes = [], []
    for name, path in paths.items():
        problem = check_view(path, keys[name])
        if problem:
            repairs.append(f"{name}: {problem}")
            if problem != "missing":
                notes.append(f"{path} is rebuilt: {problem}")
    for refine_hash, view in plan.views.items():
        folder = Path(plan.stage_dir("refine", refine_hash)) / view
        problem = check_view(folder, view) if folder.exists() else None
        if problem:
            if remove:
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
                seal_path(folder).unlink(missing_ok=True)
            repairs.append(f"{folder}: {problem}")
            notes.append(f"{folder} is rebuilt: {problem} (the cached masks are untouched)")
    return repairs, notes


def views_stamps(plan: Plan, keys: dict[str, str], repairs: list[str]) -> tuple[str, str]:
    """(the stamp this parse asks for, the stamp of the state after it): the same name when nothing is to be
    computed or rebuilt, so that a rerun plans nothing; another name whenever some job has work or a view
    is to be rebuilt, so that the ``views`` rule — whose inputs are every job's output — runs, and with it
    every job that has work (Snakemake does not run a job whose output is missing when everything
    downstream of it exists)."""
    settled = key_of("views", sorted(keys.items()))[:16]
    todo = sorted(plan.record_path(j) for j in plan.pipeline_jobs() if j.needed)
    if not todo and not repairs:
        return settled, settled
    return key_of(settled, todo, repairs)[:16], settled


def sync_job_records(plan: Plan) -> tuple[int, int]:
    """Make each labels/gradcam/refine job record say the truth before Snakemake looks at it: a job whose
    images all have results gets its record (so it is not planned: it has no work), and a record whose
    images lack results (entries deleted by hand) is removed (so the job runs). Returns (written, removed)."""
    written = removed = 0
    for job in plan.jobs.values():
        if job.stage == "evaluate":
            continue
        path = Path(plan.record_path(job))
        if job.needed and job.recorded:
            path.unlink(missing_ok=True)
            job.recorded = False
            removed += 1
        elif not job.needed and not job.recorded:
            write_job_record(path, job.stage, job.shard, job.ids, [], [])
            _date_as_results(path, plan.stage_dir(job.stage, job.stage_hash), job)
            job.recorded = True
            written += 1
    return written, removed


def _date_as_results(record: Path, stage_dir: str, job: StageJob) -> None:
    """Give a record written for a job that has no work (its images' results exist: the jobs were cut
    another way, e.g. another ``model_jobs`` size) the time of its newest result. Its downstream jobs' records
    are newer (their results were made from these), so Snakemake's mtime rule reruns none of them."""
    import os

    from .entries import entry_path, skip_path

    newest = 0
    for image_id in job.ids:
        key = job.keys[image_id]
        for path in (entry_path(stage_dir, job.stage, key), skip_path(stage_dir, key)):
            try:
                newest = max(newest, path.stat().st_mtime_ns)
                break
            except OSError:
                continue
    if newest:
        os.utime(record, ns=(newest, newest))


def plan_summary(plan: Plan) -> str:
    """One line: images in the run and, per stage, how many have a result and how many are to compute."""
    parts = []
    jobs = [j for js in plan.stage_jobs.values() for j in js]
    for stage in ("labels", "gradcam", "refine"):
        todo = sum(len(j.missing) for j in jobs if j.stage == stage)
        total = sum(len(j.ids) for j in jobs if j.stage == stage)
        parts.append(f"{stage} {total - todo} reused / {todo} to compute")
    model_jobs = f"{len(plan.model_groups)} model job(s) sized for the {'GPU' if plan.model_on_gpu else 'CPU'}"
    return (
        f"mode {plan.cfg['mode']}, {len(plan.image_ids)} images in {len(plan.shards)} shards ({model_jobs}), "
        f"{len(plan.runs)} run(s): " + ", ".join(parts)
    )


def stage_folders(out: str | Path, move: bool) -> tuple[dict[str, str], list[str]]:
    """Each stage's folder under ``out`` and what was said about it. A results folder from before the folders
    took their stages' names (``masks/``, ``eval/``: :data:`pnp_ovss.layout.LEGACY_STAGE_FOLDER`) is renamed
    once when ``move`` (a run that writes); otherwise (a dry run) it is read where it is."""
    folders, notes = dict(STAGE_FOLDER), []
    for stage, legacy in LEGACY_STAGE_FOLDER.items():
        old, new = Path(out) / legacy, Path(out) / STAGE_FOLDER[stage]
        if not old.is_dir() or new.exists():
            continue
        if move:
            old.rename(new)
            notes.append(f"{old} renamed {new.name}/ (the {stage} stage's folder has the stage's name now)")
        else:
            folders[stage] = legacy
            notes.append(f"{old} will be renamed {new.name}/ by the next run (the {stage} stage's folder name)")
    return folders, notes


def plan_for(cfg: dict, dataset: Dataset, ids: list[str], out: str | Path, tags: dict[str, str | None],
             digests: DigestCache, repair: bool = True, looks_only: bool = False,
             folders: dict[str, str] | None = None, model_on_gpu: bool = False) -> Plan:
    """The plan of a normalised config over ``ids`` (in this order) with its stage folders under ``out``: shards,
    the model jobs' shards (sized for a GPU with ``model_on_gpu``: :func:`pnp_ovss.config.model_job_images`),
    runs, each image's key at each stage (``tags``: what the image reader does beyond the released reading)
    and the jobs. What :func:`make_plan` and ``pnp-ovss segment`` share."""
    size = effective_shard_size(cfg)
    shards = {shard_name(i): s for i, s in enumerate(make_shards(ids, size))}
    runs, table = plan_runs(cfg)
    plan = Plan(cfg, dataset, ids, shards, runs, table, str(out), repair=repair, looks_only=looks_only,
                folders=dict(folders or STAGE_FOLDER), model_on_gpu=model_on_gpu)
    plan.model_groups = group_shards(list(shards), size, model_job_images(cfg, model_on_gpu))
    _plan_jobs(plan, _stage_keys(plan, digests, tags))
    return plan


def make_plan(raw_config: dict, repair: bool = True, write_memos: bool = True, looks_only: bool = False,
              model_on_gpu: bool = False) -> Plan:
    """The plan of a config. ``repair``: set damaged entries aside (the main snakemake process); without it
    a damaged entry only counts as missing (a cluster job's own parse, beside other jobs' writes).
    ``write_memos``: save the image header and file digest memos (``.headers.json``, ``.digests.json``);
    with neither (``snakemake -n``, ``--lint``, ``--report``: ``looks_only``) planning writes nothing."""
    cfg = normalise(raw_config)
    dataset = get_dataset(cfg)
    ids = ordered_ids(cfg, dataset)
    out = str(Path(cfg["results"]) / cfg["dataset"])
    folders, folder_notes = stage_folders(out, move=repair)
    headers = HeaderCache(Path(out) / HEADER_CACHE_NAME)
    scan = scan_images(dataset, ids, headers)
    if write_memos:
        headers.save()
    digests = DigestCache(Path(out) / DIGEST_CACHE_NAME)
    plan = plan_for(cfg, dataset, ids, out, scan.tags, digests, repair=repair, looks_only=looks_only, folders=folders,
                    model_on_gpu=model_on_gpu)
    plan.notes = folder_notes + scan.notes + plan.notes  # the plan's own: entries set aside
    if write_memos:
        digests.save()
    _plan_search(plan)
    return plan

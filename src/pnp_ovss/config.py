"""Configuration: defaults from the schema, dotted overrides, quirk switches, sweeps and stage hashes."""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from importlib import resources

import yaml

from .errors import ConfigError
from .identity import short_hash
from .parameters import (
    EVALUATE_KEYS,
    FIX_NAMES,
    GRADCAM_FIXES,
    GRADCAM_KEYS,
    LABELS_FIXES,
    LABELS_KEYS,
    REFINE_FIXES,
    REFINE_KEYS,
    SEARCH_MAPS_FIXES,
    SEARCH_MAPS_KEYS,
    SEARCH_SCORE_KEYS,
    SWEEPABLE,
    added_later,
)
from .backends import backend_facts, resolve_backend_name

SCHEMA_REF = resources.files("pnp_ovss") / "data" / "config.schema.yaml"

def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_REF.read_text(encoding="utf-8"))


def _defaults_of(schema: dict) -> dict:
    out = {}
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            out[key] = _defaults_of(sub)
        elif "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    return out


def defaults() -> dict:
    """Every key with its schema default."""
    return _defaults_of(load_schema())


def _coerce_scalar(text):
    """A value given on the command line as a string: parse it as YAML (numbers, lists, null, booleans)."""
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def fold_dotted(cfg: dict) -> dict:
    """Fold ``{"refine.threshold": "0.3"}`` into ``{"refine": {"threshold": 0.3}}``.

    Snakemake's ``--config a.b=v`` yields a top-level key ``"a.b"`` whose value may be a string;
    values of dotted keys are parsed as YAML so ``0.3``, ``[0.1,0.2]`` and ``null`` get their types.
    """
    out = {}
    dotted = []
    for key, value in cfg.items():
        if isinstance(key, str) and "." in key:
            dotted.append((key, value))
        else:
            out[key] = copy.deepcopy(value)
    for key, value in dotted:
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"config key {key!r}: {part!r} is not a section")
            node = node[part]
        node[parts[-1]] = _coerce_scalar(value)
    return out


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(cfg: dict) -> None:
    import jsonschema

    try:
        jsonschema.validate(cfg, load_schema())
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ConfigError(f"config key {where}: {exc.message}") from None


def _types(schema: dict) -> set:
    t = schema.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def coerce_to_schema(value, schema: dict):
    """Give command-line strings their schema types.

    ``snakemake --config refine="{threshold: 0.3}"`` parses nested values with YAML's BaseLoader, so
    every leaf arrives as a string (``"0.3"``, ``["0.1", "0.2"]``, ``"null"``). A string where the schema
    expects no string is parsed as YAML; lists and sections are walked recursively.
    """
    types = _types(schema)
    if isinstance(value, dict) and "properties" in schema:
        return {
            k: coerce_to_schema(v, schema["properties"][k]) if k in schema["properties"] else v
            for k, v in value.items()
        }
    if isinstance(value, str) and types and "string" not in types:
        value = _coerce_scalar(value)
    if isinstance(value, list) and "items" in schema:
        return [coerce_to_schema(v, schema["items"]) for v in value]
    return value


def normalise(cfg: dict) -> dict:
    """Fold dotted keys, give command-line strings their schema types, fill defaults, validate."""
    schema = load_schema()
    cfg = coerce_to_schema(fold_dotted(cfg or {}), schema)
    full = deep_merge(defaults(), cfg)
    validate(full)
    return full


#: quirks that are artefacts of the released BLIP code (§10.4, §10.7, §1.2): a backend without a released
#: reference always runs with these fixed
BLIP_CODE_QUIRKS = ("exclude_sep_rows", "mean_last_class", "keep_spaces", "normalize_ade")


def backend_name(cfg: dict) -> str:
    """The backend that runs ``gradcam.model`` (``auto`` resolved from the checkpoint)."""
    g = cfg.get("gradcam") or {}
    return resolve_backend_name(str(g.get("backend", "blip")), str(g.get("model", "")))


def backend_defaults(cfg: dict):
    return backend_facts(backend_name(cfg)).defaults


def resolve_fixes(cfg: dict) -> dict[str, bool]:
    """Effective quirk switches: an explicit true/false wins, null follows the mode (``keep_spaces`` is also
    on for the user's own classes, ``dataset: folder`` and ``pnp-ovss segment``). A backend without a released
    reference (BridgeTower) runs the clean rules for the BLIP-code quirks; turning one of them off is refused."""
    clean = cfg["mode"] == "clean"
    given = cfg.get("fixes") or {}
    default = {name: clean for name in FIX_NAMES}
    default["keep_spaces"] = clean or cfg.get("dataset") == "folder"
    fixes = {name: (default[name] if given.get(name) is None else bool(given[name])) for name in FIX_NAMES}
    backend = backend_facts(backend_name(cfg))
    if not backend.has_faithful_reference:
        for name in BLIP_CODE_QUIRKS:
            if given.get(name) is False:
                raise ConfigError(
                    f"fixes.{name}: false reproduces a quirk of the released BLIP code, which the {backend.name} "
                    f"backend has no released version of; leave it null (it runs fixed)"
                )
            fixes[name] = True
    return fixes


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _sweep(section: dict, keys) -> list[dict]:
    """All combinations of the list-valued sweepable keys of a section (others kept as they are)."""
    values = [_as_list(section[k]) for k in keys]
    for k, v in zip(keys, values):
        if not v:
            raise ConfigError(f"sweep over {k!r} has no values")
    combos = []
    for combo in itertools.product(*values):
        d = dict(section)
        d.update(dict(zip(keys, combo)))
        combos.append(d)
    return combos


def resolved_label_source(cfg: dict) -> str:
    source = cfg["labels"]["source"]
    if source != "auto":
        return source
    from .descriptors import DESCRIPTORS

    return DESCRIPTORS[cfg["dataset"]].default_labels_source


def labels_params(cfg: dict) -> dict:
    fixes = resolve_fixes(cfg)
    lab = cfg["labels"]
    source = resolved_label_source(cfg)
    values = {"dataset": cfg["dataset"], "mode": cfg["mode"], "source": source, "min_probability": lab["min_probability"]}
    p = {
        "stage": "labels",
        **{k: values[k] for k in LABELS_KEYS},
        **{k: fixes[k] for k in LABELS_FIXES},
        **added_later("labels", {"keep_spaces": fixes["keep_spaces"]}),
    }
    if cfg["dataset"] == "folder":
        p["classes"] = cfg["classes"]
    if source == "gpt4o_file":
        p["file"] = lab["file"] or "authors"
    elif source == "gpt4o":
        p.update({k: lab[k] for k in ("model", "temperature", "prompt", "json_schema")})
    elif source == "list":
        p["classes_list"] = lab["classes"]
    return p


#: CPU threads of a GPU job (gradcam, search maps) when ``gradcam.threads`` is null: decoding and preprocessing
#: beside the model need a few; the other cores go to refine, evaluate and labels jobs meanwhile
GPU_JOB_THREADS = 4
#: a CPU GPU-stage job asks for this many threads, which Snakemake caps at ``--cores``: the whole machine
ALL_CORES = 256


def gpu_visible(environ=None, root: str = "/") -> bool:
    """Whether this machine shows an NVIDIA GPU to its processes, read without torch (the parse never imports
    it): a GPU under ``/proc/driver/nvidia/gpus`` or a ``/dev/nvidiaN`` device, unless ``CUDA_VISIBLE_DEVICES``
    hides them all. Only scheduling asks this (the model rules' threads); a job decides its device itself."""
    import os

    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    base = Path(root)
    gpus = base / "proc" / "driver" / "nvidia" / "gpus"
    try:
        if gpus.is_dir() and any(gpus.iterdir()):
            return True
        return any(p.name[len("nvidia"):].isdigit() for p in (base / "dev").glob("nvidia[0-9]*"))
    except OSError:
        return False


def on_gpu(gradcam_cfg: dict, cuda_available: bool) -> bool:
    """Whether the model stages run on a GPU: ``device: cuda``, or ``auto`` where a GPU is available."""
    device = gradcam_cfg.get("device", "auto")
    return device == "cuda" or (device == "auto" and bool(cuda_available))


def model_job_threads(gradcam_cfg: dict, cuda_available: bool) -> int:
    """The ``threads:`` of the model rules (gradcam, search maps): ``gradcam.threads`` when set; a few on a
    GPU (:data:`GPU_JOB_THREADS`); every core on the CPU (:data:`ALL_CORES`, capped by Snakemake)."""
    if gradcam_cfg.get("threads") is not None:
        return int(gradcam_cfg["threads"])
    return GPU_JOB_THREADS if on_gpu(gradcam_cfg, cuda_available) else ALL_CORES


def profile_gives_gpu(overwrite_resources) -> bool | None:
    """Whether Snakemake's per-rule resources (a profile's ``set-resources``, ``--set-resources``) give the
    gradcam rule a GPU: ``gpu``/``gpus`` above 0, a ``gres`` naming ``gpu``, or a ``gpu_model``; None when
    they say nothing about it. Values may be plain or Snakemake ``Resource`` objects (``.value``)."""
    rule = dict((overwrite_resources or {}).get("gradcam") or {})
    values = {k: getattr(v, "value", v) for k, v in rule.items()}
    if values.get("gpu_model"):
        return True
    for key in ("gpu", "gpus"):
        if key in values:
            try:
                return float(values[key]) > 0
            except (TypeError, ValueError):
                return bool(values[key])
    if values.get("gres"):
        return "gpu" in str(values["gres"])
    return None


#: the environment variable through which the main snakemake process tells the parses of its jobs (on other
#: machines: SLURM compute nodes) what it sized the model jobs for, so that every parse cuts the same jobs
SIZED_FOR_ENV = "PNP_OVSS_MODEL_JOBS_SIZED_FOR"


def model_jobs_on_gpu(cfg: dict, machine_gpu: bool, profile_gpu: bool | None = None) -> bool:
    """Whether the model stages' jobs are sized for a GPU (``model_jobs.sized_for``): explicit gpu/cpu; else
    ``gradcam.device`` cuda/cpu; else (``auto``) what the profile gives the gradcam rule
    (:func:`profile_gives_gpu`), else whether the planning machine sees a GPU (:func:`gpu_visible`)."""
    sized_for = cfg.get("model_jobs", {}).get("sized_for", "auto")
    if sized_for != "auto":
        return sized_for == "gpu"
    device = cfg["gradcam"].get("device", "auto")
    if device != "auto":
        return device == "cuda"
    if profile_gpu is not None:
        return bool(profile_gpu)
    return bool(machine_gpu)


def model_job_images(cfg: dict, on_gpu_: bool) -> int:
    """The target images per model job (before rounding to whole shards and balancing): ``model_jobs.images``;
    on a GPU the smallest job of at least ``min_gpu_images`` whose set-up is at most ``setup_share`` of the
    job (``setup_seconds`` against the images' ``gpu_seconds_per_image``); on the CPU one shard (a CPU job's
    model time dwarfs its set-up)."""
    import math

    jobs = cfg["model_jobs"]
    if jobs.get("images") is not None:
        return int(jobs["images"])
    if not on_gpu_:
        return int(cfg["shard_size"])
    share = float(jobs["setup_share"])
    for_share = math.ceil(float(jobs["setup_seconds"]) * (1 - share) / (share * float(jobs["gpu_seconds_per_image"])))
    return max(int(jobs["min_gpu_images"]), for_share)


def torch_threads_for_job(gradcam_cfg: dict, job_threads: int, cuda_available: bool) -> int | None:
    """The torch thread count a model job sets: its threads when they were chosen (``gradcam.threads``) or
    when it runs on a GPU; None (torch's default, every core) for a CPU job sized by default, so CPU results
    stay those of earlier runs (the thread count can change the last bits of a float sum)."""
    if gradcam_cfg.get("threads") is not None or on_gpu(gradcam_cfg, cuda_available):
        return max(1, int(job_threads))
    return None


def gradcam_params(cfg: dict, combo: dict, labels_hash: str) -> dict:
    """The GradCAM stage's parameters: ``layer``/``head`` null → the backend's default; ``backend`` appears
    only when it is not BLIP, so every BLIP result keeps the hash it had before backends existed."""
    fixes = resolve_fixes(cfg)
    defaults = backend_defaults(cfg)
    values = {
        **combo,
        "layer": defaults.layer if combo["layer"] is None else combo["layer"],
        "head": defaults.head if combo["head"] is None else combo["head"],
    }
    later = {
        "backend": backend_name(cfg),
        "vision_attention": cfg["gradcam"].get("vision_attention", "eager"),
        "keep_spaces": fixes["keep_spaces"],
        # made-up maps (benchmarks/pipeline_speed.py --simulate-gpu) live under their own hash
        "simulate_gpu": cfg["gradcam"].get("simulate_gpu"),
    }
    return {
        "stage": "gradcam",
        "upstream": labels_hash,
        **{k: values[k] for k in GRADCAM_KEYS},
        **{k: fixes[k] for k in GRADCAM_FIXES},
        **added_later("gradcam", later),
    }


def refine_params(cfg: dict, combo: dict, gradcam_hash: str) -> dict:
    fixes = resolve_fixes(cfg)
    values = {**combo, **fixes}
    if values["threshold"] is None:
        values["threshold"] = backend_defaults(cfg).threshold
    return {"stage": "refine", "upstream": gradcam_hash, "dataset": cfg["dataset"], **{k: values[k] for k in REFINE_KEYS}}


def search_maps_params(cfg: dict, labels_hash: str) -> dict:
    """The search's maps (one drop iteration, every searched layer and head): what they depend on."""
    fixes = resolve_fixes(cfg)
    values = {**cfg["gradcam"], **cfg["search"], "backend": backend_name(cfg)}
    return {
        "stage": "search",
        "upstream": labels_hash,
        **{k: values[k] for k in SEARCH_MAPS_KEYS},
        **added_later("search", {"vision_attention": cfg["gradcam"].get("vision_attention", "eager")}),
        **{k: fixes[k] for k in SEARCH_MAPS_FIXES},
    }


def search_score_params(cfg: dict, maps_hash: str) -> dict:
    """The search's scoring: strategy, thresholds, reward options, CLIP, and (for ``mask: pipeline`` and the
    mIoU per setting) the refine settings and the scoring protocol."""
    s = cfg["search"]
    refine = {k: v for k, v in cfg["refine"].items() if k != "threshold"}
    return {
        "stage": "search-score",
        "upstream": maps_hash,
        **{k: s[k] for k in SEARCH_SCORE_KEYS},
        "refine": {**refine, **{k: v for k, v in resolve_fixes(cfg).items() if k in REFINE_FIXES}},
        "dataset": cfg["dataset"],
        "protocol": cfg["protocol"],
        "mmseg_variant": cfg["mmseg_variant"],
    }


def check_search_refine(refine: dict) -> None:
    """The search refines at one setting of every refine key but the threshold (which it searches)."""
    for k, v in refine.items():
        if isinstance(v, list):
            raise ConfigError(f"refine.{k}: the search takes one value, not a sweep ({v})")


def evaluate_params(cfg: dict, refine_hash: str) -> dict:
    return {"stage": "evaluate", "upstream": refine_hash, **{k: cfg[k] for k in EVALUATE_KEYS}}


@dataclass(frozen=True)
class Run:
    """One combination of a sweep: the hash of each stage and its parameters."""

    labels: str
    gradcam: str
    refine: str
    evaluate: str


def plan_runs(cfg: dict) -> tuple[list[Run], dict[str, dict]]:
    """Expand sweeps into runs; returns the runs and a table {hash: params} for every stage folder."""
    table: dict[str, dict] = {}
    lp = labels_params(cfg)
    lh = short_hash(lp)
    table[lh] = lp
    runs = []
    for gcombo in _sweep(cfg["gradcam"], SWEEPABLE["gradcam"]):
        gp = gradcam_params(cfg, gcombo, lh)
        gh = short_hash(gp)
        table[gh] = gp
        for rcombo in _sweep(cfg["refine"], SWEEPABLE["refine"]):
            rp = refine_params(cfg, rcombo, gh)
            rh = short_hash(rp)
            table[rh] = rp
            ep = evaluate_params(cfg, rh)
            eh = short_hash(ep)
            table[eh] = ep
            runs.append(Run(lh, gh, rh, eh))
    return runs, table


def flat_run_parameters(table: dict[str, dict], run: Run) -> dict:
    """Human-readable parameters of every stage of a run, flattened as ``stage.key`` (for CSV rows)."""
    out = {}
    for stage in ("labels", "gradcam", "refine", "evaluate"):
        h = getattr(run, stage)
        out[f"{stage}.hash"] = h
        for k, v in table[h].items():
            if k in ("stage", "upstream"):
                continue
            out[f"{stage}.{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out

"""Everything knowable before the first job, checked once when the workflow is parsed (issue 18).

:func:`preflight` looks at a plan (:func:`pnp_ovss.plan.make_plan`) and at what is on this machine, without
loading a model (no torch here: config.json files, the Hugging Face cache and tokenizer files only):

* ``gradcam.layer`` / ``gradcam.head`` (and ``search.layers`` / ``search.heads``) against the checkpoint's
  config.json;
* the caption of a run where every image gets every class (``labels.source: list``) against the model's text
  limit, counted with the checkpoint's own tokenizer;
* ``labels.source: gpt4o`` without ``OPENAI_API_KEY`` when some image has no cached answer;
* a folder dataset's annotations: missing files, and sizes other than their image's (PNG headers);
* the authors' answers file: a missing ``labels.file``, or where the shipped file will be downloaded to;
* a Hub checkpoint that is not in the cache: downloadable (a note with its size), or not (offline, or the Hub
  cannot be reached). That one is a property of the machine, not of the config: a dry run names it, and a run
  stops on it before the first job that loads the model (:meth:`Preflight.refuse_jobs`, from ``onstart``), so
  ``--until labels`` or a dry run on a machine without the model still work.

Config problems are refused at once, all of them in one error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .backends.checkpoints import (
    caption_token_limit,
    cross_attention_layers_heads,
    local_tokenizer,
    model_availability,
    probe_hub,
    read_checkpoint_config,
)
from .config import resolved_label_source
from .errors import ConfigError, DatasetError, LabelError, ModelError, PnpOvssError
from .io import image_size
from .vocab import caption_for

#: the rules that load the GradCAM model (rules/gradcam.smk, rules/search.smk)
MODEL_RULES = frozenset({"gradcam", "search_maps"})
#: the live API's answer cache under results/<dataset>/ (rules/labels.smk)
LIVE_ANSWERS_FOLDER = Path("labels") / "gpt4o-answers"
#: how many names a message lists before it says how many more there are
NAMED = 5


@dataclass
class Preflight:
    """What the parse says before the first job: ``notes`` (what will happen first, e.g. a download),
    ``warnings``, and ``deferred`` problems of this machine, each with the rules it stops."""

    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deferred: list[tuple[frozenset, PnpOvssError]] = field(default_factory=list)

    def refuse_jobs(self, rules) -> None:
        """Stop a run whose jobs include one that a deferred problem makes fail (call before the first job)."""
        stopping = [error for needs, error in self.deferred if needs & set(rules)]
        if stopping:
            raise combined(stopping)


def combined(errors: list[PnpOvssError]) -> PnpOvssError:
    """One error for several problems (each on its own line), or the one problem itself."""
    if len(errors) == 1:
        return errors[0]
    lines = "\n".join(f"  - {e}" for e in errors)
    return ConfigError(f"{len(errors)} problems stop the run before its first job:\n{lines}")


def listed(items: list, total: int | None = None) -> str:
    """The first few items, and how many there are in all when that is more."""
    total = len(items) if total is None else total
    head = ", ".join(str(i) for i in items[:NAMED])
    return head + (f", ... ({total} in all)" if total > NAMED else "")


# --- the plan's needed work -----------------------------------------------------------------------


def needed_ids(plan, stage: str) -> list[str]:
    """The images some job of ``stage`` still has to compute, in plan order (each once)."""
    seen: dict[str, None] = {}
    for jobs in plan.stage_jobs.values():
        for job in jobs:
            if job.stage == stage:
                seen.update(dict.fromkeys(job.missing))
    return list(seen)


def needed_stage_params(plan, stage: str) -> list[dict]:
    """The parameters of every folder of ``stage`` that has a job with work left."""
    return [plan.table[h] for h, jobs in plan.stage_jobs.items() if any(j.stage == stage and j.needed for j in jobs)]


# --- 1. layer and head ----------------------------------------------------------------------------


def _values(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def out_of_range(key: str, value: int, low: int, high: int, model: str, config_file: Path, what: str) -> str | None:
    if low <= int(value) <= high:
        return None
    return (f"{key} {value} is out of range: {model} has {what} {low}..{high} (read from {config_file}); "
            f"choose a value in {low}..{high}")


def setting_name(key: str, given, backend: str) -> str:
    """How a message names the setting a value came from: the key, a sweep, or the backend's default."""
    if given is None:
        return f"{key} (null: the {backend} default)"
    if isinstance(given, list):
        return f"{key} (in the sweep {given})"
    return key


def layer_head_problems(cfg: dict, gradcam_params: list[dict], backend: str) -> list[str]:
    """``gradcam.layer`` / ``gradcam.head`` of every GradCAM folder to compute (a sweep's every value) and
    ``search.layers`` / ``search.heads`` against the checkpoint's config.json, when it is at hand."""
    model = str(cfg["gradcam"]["model"])
    found = read_checkpoint_config(model)
    if found is None:
        return []
    config, config_file = found
    layout = cross_attention_layers_heads(config, backend)
    if layout is None:
        return []
    layers, heads = layout
    given = {"layer": cfg["gradcam"]["layer"], "head": cfg["gradcam"]["head"]}
    checks = []
    for key, low, high, what in (("layer", 1, layers, "cross-attention layers (1-based)"),
                                 ("head", 0, heads - 1, "heads (0-based)")):
        values = dict.fromkeys(int(p[key]) for p in gradcam_params)
        name = setting_name(f"gradcam.{key}", given[key], backend)
        checks += [(name, v, low, high, what) for v in values]
        searched = cfg.get("search", {}).get(f"{key}s")
        checks += [(f"search.{key}s", v, low, high, what) for v in _values(searched) if searched is not None]
    problems = [out_of_range(k, v, low, high, model, config_file, what) for k, v, low, high, what in checks]
    return [p for p in problems if p]


# --- 4. the caption of "every class for every image" ----------------------------------------------


def caption_token_count(tokenizer, caption: str) -> int:
    """Tokens of one caption as the model gets it (special tokens included), before any truncation."""
    return len(tokenizer(caption, truncation=False, verbose=False)["input_ids"])


#: how to give each image its own classes, in the workflow's config and in ``pnp-ovss segment``
PER_IMAGE_LABELS = "labels.source gpt4o, gpt4o_file or ground_truth"


@dataclass(frozen=True)
class EveryClass:
    """A run where every image's caption names the same classes: the names, and how the user sets them."""

    names: list[str]
    classes_key: str  # where they come from ("classes", "labels.classes", "--classes")
    per_image: str = PER_IMAGE_LABELS  # how to give labels per image instead


def caption_problem(model: str, backend: str, every: EveryClass, keep_spaces: bool) -> str | None:
    """Refusal text when the caption naming every class is longer than the model reads; None when it fits or
    when the tokenizer is not at hand offline (the job checks then)."""
    tokenizer = local_tokenizer(model)
    if tokenizer is None or not every.names:
        return None
    count = caption_token_count(tokenizer, caption_for(list(every.names), keep_spaces))
    limit = caption_token_limit(backend, tokenizer)
    if count <= limit:
        return None
    return (f"the caption naming every class gets {count} tokens with the tokenizer of {model}, but the {backend} "
            f"model reads at most {limit} (every image is given all {len(every.names)} classes); give fewer classes "
            f"({every.classes_key}), or labels per image ({every.per_image}) so that each caption names only the "
            f"image's own classes")


def setting_problems(cfg: dict, gradcam_params: list[dict], backend: str, every: EveryClass | None) -> list[str]:
    """The model-dependent problems of a config: layer/head ranges and, where every image gets every class,
    the caption length (the workflow's parse and ``pnp-ovss segment`` both ask this)."""
    problems = layer_head_problems(cfg, gradcam_params, backend)
    if every is not None:
        keep = bool(gradcam_params[0].get("keep_spaces", False))
        problems.append(caption_problem(str(cfg["gradcam"]["model"]), backend, every, keep))
    return [p for p in problems if p]


def every_class(plan) -> EveryClass | None:
    """The classes every image's caption names when the labels source gives each image the same list
    (``labels.source: list``), with the config key that sets them; None for per-image sources."""
    from .labels.sources import resolve_class_list

    cfg, dataset = plan.cfg, plan.dataset
    if resolved_label_source(cfg) != "list":
        return None
    vocab = dataset.vocabulary
    ids = resolve_class_list(vocab, cfg["labels"]["classes"], dataset.name)
    given = cfg["labels"]["classes"] is not None or cfg["dataset"] != "folder"
    return EveryClass([vocab.name(i) for i in ids], "config key labels.classes" if given else "config key classes")


# --- 3. live GPT-4o -------------------------------------------------------------------------------


def live_api_problem(plan, environ=None) -> str | None:
    """``labels.source: gpt4o`` with images to ask and no ``OPENAI_API_KEY`` (the key is only tested for
    presence, never read into a message)."""
    from .identity import DIGEST_CACHE_NAME, DigestCache
    from .labels.openai_live import API_KEY_ENV, BASE_URL_ENV, LiveSettings, unanswered

    environ = os.environ if environ is None else environ
    if resolved_label_source(plan.cfg) != "gpt4o" or str(environ.get(API_KEY_ENV, "")).strip():
        return None
    todo = needed_ids(plan, "labels")
    if not todo:
        return None
    params = needed_stage_params(plan, "labels")[0]
    answers = Path(plan.out) / LIVE_ANSWERS_FOLDER
    digests = DigestCache(Path(plan.out) / DIGEST_CACHE_NAME)
    ask = unanswered(plan.dataset, todo, LiveSettings.from_options(params, plan.cfg["labels"]), answers, digests.digest)
    if not ask:
        return None
    return (f"labels.source gpt4o: {len(ask)} of the {len(todo)} images to label have no answer in {answers} yet, "
            f"and {API_KEY_ENV} is not set; set {API_KEY_ENV} (and {BASE_URL_ENV} for another compatible server), "
            f"or choose another labels.source (gpt4o_file, list, ground_truth)")


# --- 5. a folder's annotations --------------------------------------------------------------------


def annotation_findings(dataset, image_ids: list[str]) -> tuple[list[Path], list[str]]:
    """A folder dataset's annotation files that are missing, and those whose size (PNG header) is not their
    image's (one line each, naming both files and both sizes)."""
    missing, mismatched = [], []
    for image_id in image_ids:
        ann = Path(dataset.annotation_path(image_id))
        if not ann.is_file():
            missing.append(ann)
            continue
        try:
            ah, aw = image_size(ann)
            h, w = dataset.image_size(image_id)
        except DatasetError:
            continue  # an unreadable file: the job that reads it names it
        if (ah, aw) != (h, w):
            mismatched.append(f"{ann} is {aw}x{ah} (WxH) but its image {dataset.image_path(image_id)} is {w}x{h}")
    return missing, mismatched


def annotation_messages(dataset, image_ids: list[str], on_error: str) -> tuple[list[str], list[str]]:
    """(refusals, warnings) about a folder dataset's annotations: refused with ``on_error: fail``, announced as
    left out of the evaluation with ``skip``."""
    if getattr(dataset, "annotations", None) is None or not image_ids:
        return [], []
    missing, mismatched = annotation_findings(dataset, image_ids)
    texts = []
    if missing:
        texts.append(f"{len(missing)} of {len(image_ids)} images have no annotation in {dataset.annotations}: "
                     f"{listed([p.name for p in missing])}; expected a label PNG named like each image")
    if mismatched:
        texts.append(f"{len(mismatched)} annotation(s) differ in size from their image: {listed(mismatched)}; "
                     f"expected the same size")
    if on_error == "skip":
        return [], [f"{t} (on_error=skip: the evaluation leaves these images out)" for t in texts]
    return [f"{t} (or run with on_error=skip to leave these images out of the evaluation)" for t in texts], []


# --- 6. the authors' answers file -----------------------------------------------------------------


def answers_file_messages(cfg: dict) -> tuple[list[str], list[str]]:
    """(refusals, notes) for ``labels.source: gpt4o_file``: a ``labels.file`` that is not there; the shipped
    file of the authors not in the user cache yet (where the first labels job downloads it to)."""
    from .labels.sources import authors_cache_path, authors_url

    if resolved_label_source(cfg) != "gpt4o_file":
        return [], []
    given = cfg["labels"]["file"]
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            return [f"{path}: labels.file not found (expected a JSON of GPT-4o answers); check the path, or set "
                    f"labels.file to null for the authors' file of {cfg['dataset']}"], []
        return [], []
    try:
        path = authors_cache_path(cfg["dataset"])
    except LabelError as exc:
        return [str(exc)], []
    if path.is_file():
        return [], []
    return [], [f"the authors' GPT-4o answers for {cfg['dataset']} are not in the cache yet: the first labels job "
                f"downloads {authors_url(cfg['dataset'])} into {path} (checksum verified; PNP_OVSS_CACHE moves "
                f"the cache)"]


# --- all of it ------------------------------------------------------------------------------------


def preflight(plan, backend: str, environ=None, probe=probe_hub) -> Preflight:
    """Every check above on a plan; raises one error naming every config problem, returns the notes, the
    warnings and this machine's problems for :meth:`Preflight.refuse_jobs`."""
    cfg, dataset = plan.cfg, plan.dataset
    model = str(cfg["gradcam"]["model"])
    result = Preflight()
    refusals: list[PnpOvssError] = []
    model_work = bool(needed_ids(plan, "gradcam") or needed_ids(plan, "search"))
    if model_work:
        gradcam = needed_stage_params(plan, "gradcam") or [p for p in plan.table.values() if p["stage"] == "gradcam"]
        try:
            every = every_class(plan)
        except LabelError as exc:  # labels.classes names a class the dataset does not have
            refusals.append(exc)
            every = None
        refusals += [ConfigError(p) for p in setting_problems(cfg, gradcam, backend, every)]
    if needed_ids(plan, "labels"):
        problem = live_api_problem(plan, environ)
        if problem:
            refusals.append(LabelError(problem))
        refused, notes = answers_file_messages(cfg)
        refusals += [LabelError(t) for t in refused]
        result.notes += notes
    graded = needed_ids(plan, "evaluate")
    if resolved_label_source(cfg) == "ground_truth":
        graded = list(dict.fromkeys(needed_ids(plan, "labels") + graded))
    refused, warnings = annotation_messages(dataset, graded, cfg["on_error"])
    refusals += [DatasetError(t) for t in refused]
    result.warnings += warnings
    if refusals:
        raise combined(refusals)
    if model_work:
        availability = model_availability(model, environ=environ, probe=probe)
        if availability.note:
            result.notes.append(availability.note)
        if availability.problem:
            result.deferred.append((MODEL_RULES, ModelError(availability.problem)))
            result.warnings.append(f"{availability.problem} (a run stops on this before its first gradcam job)")
    return result

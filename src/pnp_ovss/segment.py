"""``pnp-ovss segment``: the whole method on a few images, outside Snakemake, through the same stage
functions the workflow's rule scripts run (``run_labels_job`` -> ``run_gradcam_job`` -> ``run_refine_job``,
into a temporary results folder with the keys the workflow's plan computes), then the label maps by image
name (``<out>/<image>.png``, ``<out>/skipped.csv``) and an overlay per image."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .config import normalise, plan_runs
from .datasets.folder import Files
from .errors import ConfigError
from .io import atomic_write_bytes, read_label_png
from .vocab import vocabulary_from_spec

log = logging.getLogger(__name__)


def segment_config(classes: str, args: argparse.Namespace) -> dict:
    overrides = {
        "dataset": "folder",
        "images": ".",
        "classes": classes,
        "mode": args.mode,
        "labels": {"source": "gpt4o" if args.gpt4o else "list"},
        "gradcam": {"device": args.device, "backend": getattr(args, "backend", "auto")},
        "refine": {},
        "shard_size": 10**6,
    }
    if args.model:
        overrides["gradcam"]["model"] = args.model
    for item in args.set or []:
        key, _, value = item.partition("=")
        if not _ or "." not in key:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. refine.threshold=0.2")
        overrides[key] = value
    cfg = normalise(overrides)
    for section in ("gradcam", "refine"):
        for key, value in cfg[section].items():
            if isinstance(value, list):
                raise ConfigError(f"{section}.{key}: segment takes one value, not a sweep")
    return cfg


def segment_plan(cfg: dict, dataset, tags: dict, out: Path):
    """The plan of ``segment``'s one run, its stage folders under ``out`` (a temporary folder): the images in
    the given order, shards as the workflow cuts them, and each image's key at each stage computed as the
    workflow's plan computes it (:mod:`pnp_ovss.plan`)."""
    from .identity import DIGEST_CACHE_NAME, DigestCache
    from .plan import plan_for

    return plan_for(cfg, dataset, dataset.image_ids(), out, tags, DigestCache(out / DIGEST_CACHE_NAME))


def run_stages(plan, cfg: dict, dataset, labels_cache: Path, on_stage=None) -> dict[str, str]:
    """labels -> gradcam -> refine through the stage functions the rule scripts run (``run_<stage>_job``),
    job by job of the plan; returns the images' keys in the refine stage folder. ``on_stage(stage)`` is told
    when each stage starts (the app's progress)."""
    from .stages.gradcam import run_gradcam_job
    from .stages.job import ShardWork
    from .stages.labels import run_labels_job
    from .stages.refine import run_refine_job

    run = plan.runs[0]
    for stage in ("labels", "gradcam", "refine"):
        if on_stage is not None:
            on_stage(stage)
        h = getattr(run, stage)
        for job in plan.stage_jobs[h]:
            up = job.upstream_keys
            work = ShardWork(job.keys, Path(plan.stage_dir(stage, h)), Path(plan.record_path(job)),
                             up, Path(plan.upstream_dir(h)) if up is not None else None, job.shard, log)
            if stage == "labels":
                run_labels_job(dataset, job.ids, plan.table[h], work, options=cfg["labels"], answers_dir=labels_cache)
            elif stage == "gradcam":
                run_gradcam_job(dataset, job.ids, plan.table[h], work, device=cfg["gradcam"]["device"])
            else:
                run_refine_job(dataset, job.ids, plan.table[h], work, on_error="fail")
    return plan.stage_keys(run.refine)


@dataclass
class Prepared:
    """The images of one ``segment`` (or app) request, checked: the dataset, what their headers say, and the
    notes and warnings to show (unknown words, multi-frame files, where the model comes from)."""

    dataset: object
    scan: object
    notes: list[str] = field(default_factory=list)


def prepare_segment(cfg: dict, image_paths: list[Path], classes: str, *, gpt4o: bool) -> Prepared:
    """Everything checked before any model runs, all problems named at once: the model choice and image size,
    every image readable, the setting (layer, head; the caption of every class, unless GPT-4o chooses), the model
    cached or downloadable. Returns the dataset and the notes (words the tokenizer splits, multi-frame files)."""
    from .backends.checkpoints import check_model_choice, model_availability, unknown_piece_warnings
    from .checks import EveryClass, combined, setting_problems
    from .config import backend_name, resolve_fixes
    from .datasets import reading_of
    from .datasets.base import scan_images
    from .errors import ModelError

    check_model_choice(cfg["gradcam"]["model"], cfg["gradcam"]["image_size"], backend_name(cfg))
    dataset = Files(image_paths, vocabulary_from_spec(classes))
    dataset.reading = reading_of(cfg, dataset)
    scan = scan_images(dataset, dataset.image_ids())
    notes = list(scan.notes)
    keep = resolve_fixes(cfg)["keep_spaces"]
    notes += [f"warning: {w}" for w in unknown_piece_warnings(cfg["gradcam"]["model"], list(dataset.vocabulary.names), keep)]
    # layer/head and (every image gets every class unless GPT-4o chooses) the caption length, before any model
    every = None if gpt4o else EveryClass(list(dataset.vocabulary.names), "--classes", "--gpt4o")
    gradcam = [p for p in plan_runs(cfg)[1].values() if p["stage"] == "gradcam"]
    problems = setting_problems(cfg, gradcam, backend_name(cfg), every)
    if problems:
        raise combined([ConfigError(p) for p in problems])
    availability = model_availability(cfg["gradcam"]["model"], key="--model")
    if availability.problem:
        raise ModelError(availability.problem)
    if availability.note:
        notes.append(availability.note)
    return Prepared(dataset, scan, notes)


def run_segment(cfg: dict, prepared: Prepared, work_dir: Path, labels_cache: Path, on_stage=None):
    """The stages of one request in ``work_dir`` (a temporary results folder): returns its plan and the images'
    keys in the refine stage folder."""
    plan = segment_plan(cfg, prepared.dataset, prepared.scan.tags, Path(work_dir))
    return plan, run_stages(plan, cfg, prepared.dataset, labels_cache, on_stage=on_stage)


def segment(image_paths: list[Path], classes: str, out_dir: Path, args: argparse.Namespace) -> list[Path]:
    from .report import overlay
    from .stages.views import write_masks

    cfg = segment_config(classes, args)
    prepared = prepare_segment(cfg, image_paths, classes, gpt4o=args.gpt4o)
    for note in prepared.notes:
        print(f"pnp-ovss segment: {note}", file=sys.stderr)
    dataset = prepared.dataset
    ids = dataset.image_ids()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pnp-ovss-segment-") as tmp:
        plan, keys = run_segment(cfg, prepared, Path(tmp), out_dir / ".labels-cache")
        # the label maps by image name and skipped.csv, as the workflow's masks view
        write_masks(ids, keys, plan.stage_dir("refine", plan.runs[0].refine), out_dir)
    names = dict(zip(dataset.vocabulary.ids, dataset.vocabulary.names))
    written = []
    for image_id in ids:
        labels_png = out_dir / f"{image_id}.png"
        picture = overlay(dataset.read_crf_image(image_id), read_label_png(labels_png), dataset.palette, names)
        path = out_dir / f"{image_id}_overlay.png"
        import io

        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())
        written += [labels_png, path]
    return written


MODE_NOTE = {
    "clean": "mode clean: every quirk of the released code fixed (--mode faithful reproduces them)",
    "faithful": "mode faithful: the released code's quirks reproduced (ALGORITHM.md §10; --mode clean fixes them)",
}


def _cmd_segment(args: argparse.Namespace) -> int:
    print(f"pnp-ovss segment: {MODE_NOTE[args.mode]}", file=sys.stderr)
    written = segment([Path(p) for p in args.images], args.classes, Path(args.out), args)
    for p in written:
        print(p)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment images into the given classes (labels -> gradcam -> refine), writing label and overlay PNGs",
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--classes", required=True, help='class names, "cat,sofa,lamp", or a file with one per line')
    p.add_argument("--gpt4o", action="store_true", help="ask GPT-4o which of the classes each image shows (OPENAI_API_KEY)")
    p.add_argument("--out", required=True, help="output folder: <image>.png label maps and <image>_overlay.png")
    p.add_argument("--model", help="ITM model id or local directory (default Salesforce/blip-itm-large-flickr)")
    p.add_argument(
        "--backend", choices=["auto", "blip", "bridgetower"], default="auto",
        help="model family; auto (default) reads it from the checkpoint's model_type",
    )
    p.add_argument("--mode", choices=["faithful", "clean"], default="clean", help="default clean: no quirks")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="any config key, e.g. refine.threshold=0.2")
    p.set_defaults(func=_cmd_segment)

"""What ``pnp-ovss prepare`` writes for each benchmark: one :class:`Task` per image (the files of that image) and
the small files written last (split lists, the COCO instances json), all as paths relative to ``data_root``.

Planning reads only the archives' indexes and the annotation jsons; it checks that every member the plan needs
is there before anything is written.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from typing import Callable

from .sources import PrepareError, Source

#: how an output is made from the member's bytes (or the payload)
COPY = "copy"
STUFF_171 = "stuff171"
OBJECT_81 = "object81"
CONTEXT = "context"


@dataclass
class Step:
    """Read ``member`` of ``source`` (none for a Context mask, made from ``payload``) and write ``outputs``."""

    source: str | None
    member: str | None
    outputs: list[tuple[str, str]]  # (path relative to data_root, transform)
    payload: tuple | None = None


@dataclass
class Task:
    image: str
    steps: list[Step]


@dataclass
class Plan:
    dataset: str
    sources: dict[str, Source]
    tasks: list[Task]
    #: written after every task has finished: path -> bytes
    last_files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


OpenSource = Callable[[str], Source]


def _ids_from_list(data: bytes, where: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PrepareError(f"{where}: not a text split list") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise PrepareError(f"{where}: the split list is empty")
    return ids


def _json(data: bytes, where: str, keys: tuple[str, ...]) -> dict:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PrepareError(f"{where}: not valid JSON ({exc}); the download may be truncated") from None
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        raise PrepareError(f"{where}: expected a JSON object with {', '.join(keys)}")
    return obj


def plan_voc(open_source: OpenSource) -> Plan:
    src = open_source("voc2012")
    base = "VOCdevkit/VOC2012"
    split = f"{base}/ImageSets/Segmentation/val.txt"
    src.require([split])
    ids = _ids_from_list(src.read(split), src.describe(split))
    tasks = [Task(i, [Step("voc2012", m, [(m, COPY)]) for m in (f"{base}/JPEGImages/{i}.jpg",
                                                                 f"{base}/SegmentationClass/{i}.png")]) for i in ids]
    src.require([s.member for t in tasks for s in t.steps])
    last = {}
    for name in ("train.txt", "val.txt", "trainval.txt"):
        member = f"{base}/ImageSets/Segmentation/{name}"
        if member in src.names():
            last[member] = src.read(member)
    return Plan("voc", {"voc2012": src}, tasks, last)


def plan_psc(open_source: OpenSource) -> Plan:
    src = open_source("voc2010")
    js = open_source("context_json")
    where = js.describe("trainval_merged.json")
    data = _json(js.read("trainval_merged.json"), where, ("images", "annos_segmentation"))
    by_image: dict[int, list[dict]] = {}
    for ann in data["annos_segmentation"]:
        try:
            by_image.setdefault(int(ann["image_id"]), []).append(
                {"category_id": int(ann["category_id"]), "segmentation": ann["segmentation"]})
        except (KeyError, TypeError, ValueError):
            raise PrepareError(f"{where}: an annos_segmentation entry lacks image_id/category_id/segmentation") from None
    phases: dict[str, list[str]] = {"train": [], "val": []}
    tasks = []
    base = "VOCdevkit/VOC2010"
    for im in data["images"]:
        try:
            stem, phase = im["file_name"].rsplit(".", 1)[0], im["phase"]
            image_id, h, w = int(im["image_id"]), int(im["height"]), int(im["width"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise PrepareError(f"{where}: an images entry lacks file_name/image_id/phase/height/width") from None
        if phase in phases:
            phases[phase].append(stem)
        if phase != "val":
            continue
        jpg = f"{base}/JPEGImages/{im['file_name']}"
        tasks.append(Task(stem, [
            Step("voc2010", jpg, [(jpg, COPY)]),
            Step(None, None, [(f"{base}/SegmentationClassContext/{stem}.png", CONTEXT)],
                 payload=(by_image.get(image_id, []), h, w, f"{where} image {im['file_name']}")),
        ]))
    if not tasks:
        raise PrepareError(f"{where}: no image with phase 'val'; expected the PASCAL Context trainval_merged.json")
    tasks.sort(key=lambda t: t.image)
    src.require([t.steps[0].member for t in tasks])
    last = {f"{base}/ImageSets/SegmentationContext/{phase}.txt": "".join(f"{s}\n" for s in sorted(stems)).encode()
            for phase, stems in phases.items()}
    notes = [f"train.txt lists the {len(phases['train'])} Context train images; only the val images and masks are written"]
    return Plan("psc", {"voc2010": src}, tasks, last, notes)


def plan_ade20k(open_source: OpenSource) -> Plan:
    src = open_source("ade20k")
    base = "ADEChallengeData2016"
    images = sorted(n for n in src.names() if fnmatch.fnmatch(n, f"{base}/images/validation/*.jpg"))
    if not images:
        raise PrepareError(f"{src.path}: no {base}/images/validation/*.jpg; expected ADEChallengeData2016.zip")
    tasks = []
    for member in images:
        stem = member.rsplit("/", 1)[1][:-4]
        ann = f"{base}/annotations/validation/{stem}.png"
        tasks.append(Task(stem, [Step("ade20k", member, [(member, COPY)]), Step("ade20k", ann, [(ann, COPY)])]))
    src.require([t.steps[1].member for t in tasks])
    last = {m: src.read(m) for m in (f"{base}/objectInfo150.txt", f"{base}/sceneCategories.txt") if m in src.names()}
    return Plan("ade20k", {"ade20k": src}, tasks, last)


def _plan_coco(open_source: OpenSource, dataset: str, derived: tuple[tuple[str, str], ...]) -> Plan:
    images = open_source("coco_val2017")
    maps = open_source("coco_stuffthingmaps")
    annotations = open_source("coco_annotations")
    member = "annotations/instances_val2017.json"
    annotations.require([member])
    raw_json = annotations.read(member)
    data = _json(raw_json, annotations.describe(member), ("images", "annotations", "categories"))
    tasks = []
    for im in data["images"]:
        file_name = im["file_name"]
        stem = file_name.rsplit(".", 1)[0]
        raw = f"coco_stuff164k/annotations/val2017/{stem}.png"
        tasks.append(Task(stem, [
            Step("coco_val2017", f"val2017/{file_name}", [(f"coco_stuff164k/images/val2017/{file_name}", COPY)]),
            Step("coco_stuffthingmaps", f"val2017/{stem}.png",
                 [(raw, COPY)] + [(raw[:-4] + suffix, transform) for suffix, transform in derived]),
        ]))
    images.require([t.steps[0].member for t in tasks])
    maps.require([t.steps[1].member for t in tasks])
    sources = {"coco_val2017": images, "coco_stuffthingmaps": maps}
    return Plan(dataset, sources, tasks, {"coco_stuff164k/annotations/instances_val2017.json": raw_json})


def plan_coco_stuff(open_source: OpenSource) -> Plan:
    return _plan_coco(open_source, "coco_stuff", (("_labelTrainIds.png", STUFF_171),))


def plan_coco_object(open_source: OpenSource) -> Plan:
    return _plan_coco(open_source, "coco_object", (("_instanceTrainIds.png", OBJECT_81),))


def plan_cityscapes(open_source: OpenSource) -> Plan:
    """The val split: each ``leftImg8bit/val/<city>/<id>_leftImg8bit.png`` and its ``gtFine/val/<city>/
    <id>_gtFine_labelIds.png`` copied under ``cityscapes/`` (the adapter maps label ids to train ids)."""
    images = open_source("cityscapes_images")
    gt = open_source("cityscapes_gtfine")
    suffix = "_leftImg8bit.png"
    members = sorted(n for n in images.names() if fnmatch.fnmatch(n, f"leftImg8bit/val/*/*{suffix}"))
    if not members:
        raise PrepareError(f"{images.path}: no leftImg8bit/val/<city>/*{suffix}; expected leftImg8bit_trainvaltest.zip")
    tasks = []
    for member in members:
        city, name = member.split("/")[2:4]
        stem = name[: -len(suffix)]
        label = f"gtFine/val/{city}/{stem}_gtFine_labelIds.png"
        tasks.append(Task(stem, [Step("cityscapes_images", member, [(f"cityscapes/{member}", COPY)]),
                                 Step("cityscapes_gtfine", label, [(f"cityscapes/{label}", COPY)])]))
    tasks.sort(key=lambda t: t.image)
    gt.require([t.steps[1].member for t in tasks])
    notes = ["the train and test splits are not written (the benchmark is val); ground truth is the official "
             "*_gtFine_labelIds.png, mapped to the 19 train ids when read"]
    return Plan("cityscapes", {"cityscapes_images": images, "cityscapes_gtfine": gt}, tasks, {}, notes)


PLANNERS: dict[str, Callable[[OpenSource], Plan]] = {
    "voc": plan_voc,
    "psc": plan_psc,
    "ade20k": plan_ade20k,
    "coco_stuff": plan_coco_stuff,
    "coco_object": plan_coco_object,
    "cityscapes": plan_cityscapes,
}

#: the downloads each benchmark needs (for --help and messages)
NEEDS: dict[str, tuple[str, ...]] = {
    "voc": ("voc2012",),
    "psc": ("voc2010", "context_json"),
    "ade20k": ("ade20k",),
    "coco_stuff": ("coco_val2017", "coco_stuffthingmaps", "coco_annotations"),
    "coco_object": ("coco_val2017", "coco_stuffthingmaps", "coco_annotations"),
    "cityscapes": ("cityscapes_images", "cityscapes_gtfine"),
}

"""One descriptor per dataset: every fact about a dataset that more than one module needs, in one place.

The CLI choices, the config schema's ``dataset`` enum, the labels sources (the authors' answer file and its
checksum), the GPT-4o answer parser and prompt, the scoring protocols, the refine background rule and the
adapter classes all read :data:`DESCRIPTORS`. Adding a dataset = one :class:`DatasetDescriptor` here + its
adapter class (``datasets/``) + its class list (``data/classes/<name>.txt``); ``tests/test_descriptors.py``
checks that every consumer knows every descriptor.

This module imports nothing from the package, so any module can read it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

#: refine §6.4: a background channel always, or only when the image has fewer than 3 classes
BACKGROUND_ALWAYS = "always"
BACKGROUND_FEWER_THAN_3 = "fewer_than_3"

#: how GPT-4o's answer names a class (§2.2): the 1-based position it was given, or the COCO category id
IDS_BY_POSITION = "position"
IDS_COCO_CATEGORY = "coco_category"


@dataclass(frozen=True)
class DatasetDescriptor:
    name: str
    title: str
    #: the packaged class list ``data/classes/<vocabulary>.txt`` (None: the user's classes or the demo's)
    vocabulary: str | None
    #: where the data sits under ``data_root`` (mmsegmentation layout) and which split is used
    layout: str
    split: str
    #: ``module:Class`` of the adapter (imported when the dataset is opened)
    adapter: str
    #: refine §6.4 (ALGORITHM.md §10.9)
    background_rule: str
    #: ``labels.source: auto`` resolves to this
    default_labels_source: str
    #: the authors' shipped GPT-4o answers (file name in their repository, sha256), if any
    authors_answers: tuple[str, str] | None = None
    #: §2.2: ids in the answers, and the COCO-Stuff loop over the first len(classes) probabilities
    answer_ids: str = IDS_BY_POSITION
    answer_loop_over_classes: bool = False
    #: §2.4: how the category list is written into the prompt (``dict``, ``ade20k_synonyms``, ``coco_pairs``)
    prompt_categories: str = "dict"
    #: category ids the authors' prompt did not offer
    prompt_excluded_ids: tuple[int, ...] = ()
    #: the pnp protocol's confusion-matrix size (§1.1; None = background + the user's classes) and class-0 name
    pnp_n_class: int | None = None
    pnp_background_name: str = "background"
    #: the mmseg protocol's variants, default first
    mmseg_variants: tuple[str, ...] = ("folder",)
    #: a public benchmark (``data_root``, the authors' answers, ``pnp-ovss datasets check``)
    benchmark: bool = True
    #: images in the complete split (``pnp-ovss datasets check`` and ``prepare`` warn about another count)
    expected_images: int | None = None

    def adapter_class(self):
        module, _, cls = self.adapter.partition(":")
        return getattr(importlib.import_module(module), cls)


_ANSWERS_SHA256 = {
    "voc": "0720f646361130a074df819fcb17b488cd577b3dae78d14ac667da1f37c3b95c",
    "psc": "a481ac8102f3a5c940fbed19b4faf90f8b5713c4623efd264d97f3867c989dd9",
    "ade20k": "8114281016def99cc25d0749d79442d2cf78c7619e06bf5621170e9e5f16e20e",
    "coco_object": "0d953575ac730c1d243e08669c513d442abfb6693d6def89c2a7dbb1de86749a",
    "coco_stuff": "81313f7ff0beeaaf149bf0b448f33372c80f6a24a57b9088432c10935b4db224",
}


def _answers(name: str) -> tuple[str, str]:
    return f"{name}_classification_noboundary.json", _ANSWERS_SHA256[name]


_ALL = (
    DatasetDescriptor(
        name="demo", title="the embedded demo set", vocabulary=None, layout="shipped in the package (data/demo)",
        split="all 6 images", adapter="pnp_ovss.datasets.folder:Demo", background_rule=BACKGROUND_ALWAYS,
        default_labels_source="ground_truth", benchmark=False,
    ),
    DatasetDescriptor(
        name="folder", title="your own images", vocabulary=None, layout="images=DIR [annotations=DIR]",
        split="every image in the folder", adapter="pnp_ovss.datasets.folder:Folder", background_rule=BACKGROUND_ALWAYS,
        default_labels_source="list", benchmark=False,
    ),
    DatasetDescriptor(
        name="voc", title="PASCAL VOC 2012", vocabulary="voc",
        layout="VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/val.txt}", split="val (1449)",
        adapter="pnp_ovss.datasets.benchmarks:VOC", background_rule=BACKGROUND_ALWAYS,
        default_labels_source="gpt4o_file", authors_answers=_answers("voc"), pnp_n_class=21,
        mmseg_variants=("voc21", "voc20"), expected_images=1449,
    ),
    DatasetDescriptor(
        name="psc", title="PASCAL Context", vocabulary="psc",
        layout="VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext,ImageSets/SegmentationContext/val.txt}",
        split="val (5105)", adapter="pnp_ovss.datasets.benchmarks:PascalContext", background_rule=BACKGROUND_FEWER_THAN_3,
        default_labels_source="gpt4o_file", authors_answers=_answers("psc"), pnp_n_class=60,
        mmseg_variants=("pc59", "pc60"), expected_images=5105,
    ),
    DatasetDescriptor(
        name="ade20k", title="ADE20K", vocabulary="ade20k",
        layout="ADEChallengeData2016/{images,annotations}/validation", split="validation (2000)",
        adapter="pnp_ovss.datasets.benchmarks:ADE20K", background_rule=BACKGROUND_FEWER_THAN_3,
        default_labels_source="gpt4o_file", authors_answers=_answers("ade20k"), prompt_categories="ade20k_synonyms",
        pnp_n_class=151, pnp_background_name="Background", mmseg_variants=("ade150",), expected_images=2000,
    ),
    DatasetDescriptor(
        name="coco_object", title="COCO-Object", vocabulary="coco_object",
        layout="coco_stuff164k/images/val2017 + instances_val2017.json (pnp) or <id>_instanceTrainIds.png (mmseg)",
        split="val2017 (5000)", adapter="pnp_ovss.datasets.benchmarks:COCOObject", background_rule=BACKGROUND_ALWAYS,
        default_labels_source="gpt4o_file", authors_answers=_answers("coco_object"), answer_ids=IDS_COCO_CATEGORY,
        prompt_categories="coco_pairs", pnp_n_class=91, mmseg_variants=("coco_object81",), expected_images=5000,
    ),
    DatasetDescriptor(
        name="coco_stuff", title="COCO-Stuff 164k", vocabulary="coco_stuff",
        layout="coco_stuff164k/{images,annotations}/val2017 (<id>.png raw ids, <id>_labelTrainIds.png)",
        split="val2017 (5000)", adapter="pnp_ovss.datasets.benchmarks:COCOStuff", background_rule=BACKGROUND_FEWER_THAN_3,
        default_labels_source="gpt4o_file", authors_answers=_answers("coco_stuff"), answer_ids=IDS_COCO_CATEGORY,
        answer_loop_over_classes=True, prompt_categories="coco_pairs", prompt_excluded_ids=(183,), pnp_n_class=183,
        pnp_background_name="unlabeled", mmseg_variants=("coco_stuff171",), expected_images=5000,
    ),
    DatasetDescriptor(
        name="cityscapes", title="Cityscapes", vocabulary="cityscapes",
        layout="cityscapes/{leftImg8bit,gtFine}/val/<city>/ (*_leftImg8bit.png, *_gtFine_labelIds.png)",
        split="val (500)", adapter="pnp_ovss.datasets.benchmarks:Cityscapes", background_rule=BACKGROUND_FEWER_THAN_3,
        default_labels_source="list", pnp_n_class=20, pnp_background_name="void", mmseg_variants=("city19",),
        expected_images=500,
    ),
)

DESCRIPTORS: dict[str, DatasetDescriptor] = {d.name: d for d in _ALL}
#: every dataset name, in the order of the docs
DATASET_NAMES: tuple[str, ...] = tuple(DESCRIPTORS)
#: the public benchmarks
BENCHMARKS: tuple[str, ...] = tuple(d.name for d in _ALL if d.benchmark)


def descriptor(name: str) -> DatasetDescriptor:
    try:
        return DESCRIPTORS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r} (known: {', '.join(DATASET_NAMES)})") from None

"""Scoring protocols: which evaluation ids ground truth and predictions are mapped to.

``pnp``   exactly as the released code (ALGORITHM.md §1, §7): dataset ids, class 0 counted, mean over
          classes with ground-truth pixels.
``mmseg`` mmsegmentation's IoUMetric conventions (VOC21/VOC20, PC60/PC59, COCO-Object 81,
          COCO-Stuff 171, ADE150, Cityscapes 19; 255 ignored; mean over classes with a non-empty union).

Predictions are label maps in dataset ids (0 = background). ``Protocol.pred_to_eval`` maps them to
evaluation ids; a prediction that is no class of the protocol becomes ``n_class`` (void): it is wrong for
its pixel but adds to no class's predicted area, as in mmseg's ``intersect_and_union``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .descriptors import DESCRIPTORS
from .errors import ConfigError
from .vocab import Vocabulary

IGNORE = 255

#: pnp protocol confusion-matrix sizes (§1.1 "Label space in hist"), class-0 names and mmseg variants, from
#: the dataset descriptors
PNP_N_CLASS = {d.name: d.pnp_n_class for d in DESCRIPTORS.values() if d.pnp_n_class is not None}
PNP_BACKGROUND_NAME = {d.name: d.pnp_background_name for d in DESCRIPTORS.values()}
MMSEG_VARIANTS = {d.name: d.mmseg_variants for d in DESCRIPTORS.values()}


@dataclass(frozen=True)
class Protocol:
    name: str  # "pnp" or "mmseg"
    variant: str  # e.g. "pnp-voc", "voc20", "coco_stuff171"
    class_names: tuple[str, ...]
    pred_lut: np.ndarray  # [256] dataset id -> evaluation id (n_class = void)
    averaging: str  # "gt_present" (pnp) or "union_present" (mmseg)

    @property
    def n_class(self) -> int:
        return len(self.class_names)

    def pred_to_eval(self, label_map: np.ndarray) -> np.ndarray:
        label_map = np.asarray(label_map)
        if label_map.min(initial=0) < 0 or label_map.max(initial=0) > 255:
            raise ValueError("predicted label maps must hold dataset ids in 0..255")
        return self.pred_lut[label_map.astype(np.int64)]


def _lut(mapping: dict[int, int], n_class: int) -> np.ndarray:
    lut = np.full(256, n_class, dtype=np.int64)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


def default_variant(dataset: str) -> str:
    return MMSEG_VARIANTS[dataset][0]


def get_protocol(dataset: str, protocol: str, vocabulary: Vocabulary, variant: str | None = None) -> Protocol:
    """The protocol for ``dataset``; ``variant`` picks VOC21/VOC20 or PC60/PC59 under mmseg."""
    if protocol == "pnp":
        if dataset in PNP_N_CLASS:
            n = PNP_N_CLASS[dataset]
        else:  # folder / demo: background + the user's classes
            n = max(vocabulary.ids) + 1
        names = [f"unused-{i}" for i in range(n)]
        names[0] = PNP_BACKGROUND_NAME.get(dataset, "background")
        for i, name in zip(vocabulary.ids, vocabulary.names):
            if i < n:
                names[i] = name
        lut = _lut({i: i for i in range(n)}, n)
        return Protocol("pnp", f"pnp-{dataset}", tuple(names), lut, "gt_present")
    if protocol != "mmseg":
        raise ConfigError(f"unknown protocol {protocol!r} (expected pnp or mmseg)")

    variant = variant or default_variant(dataset)
    if variant not in MMSEG_VARIANTS.get(dataset, ()):
        raise ConfigError(
            f"mmseg variant {variant!r} does not apply to dataset {dataset!r} "
            f"(choose from {', '.join(MMSEG_VARIANTS.get(dataset, ()))})"
        )
    ids, names = list(vocabulary.ids), list(vocabulary.names)
    if variant in ("voc21", "pc60", "coco_object81", "folder"):
        # background is class 0, the vocabulary follows in order
        eval_names = ["background"] + names
        mapping = {0: 0, **{cid: k + 1 for k, cid in enumerate(ids)}}
    elif variant in ("voc20", "pc59", "ade150", "city19"):
        # reduce_zero_label: dataset id c -> c - 1, background is void
        eval_names = names
        mapping = {cid: k for k, cid in enumerate(ids)}
    elif variant == "coco_stuff171":
        # the 171 used COCO ids (things 1..90 with gaps, stuff 92..182); 183 "other" is not a class
        used = [cid for cid in ids if cid <= 182]
        eval_names = [vocabulary.name(cid) for cid in used]
        mapping = {cid: k for k, cid in enumerate(used)}
    else:  # pragma: no cover - guarded above
        raise ConfigError(f"unknown mmseg variant {variant!r}")
    n = len(eval_names)
    return Protocol("mmseg", variant, tuple(eval_names), _lut(mapping, n), "union_present")

"""The id conversions ``pnp-ovss prepare`` applies, as pure functions on label arrays.

* COCO-Stuff 164k ``<id>_labelTrainIds.png`` (mmsegmentation's ``coco_stuff164k.py``): the raw stuffthingmaps
  value is the COCO id - 1 (0..181, 255 = unlabeled); the 171 used ids, in order, become train ids 0..170;
  255 stays 255.
* COCO-Object ``<id>_instanceTrainIds.png`` (GroupViT's ``convert_coco_object.py``, which SCLIP, NACLIP and
  the other training-free peers ship): the 80 thing ids, in order, become 1..80; every stuff id **and the
  unlabeled value 255** become 0 (background) — the converter maps 255 to 0, so its files hold no 255.
* PASCAL Context ``SegmentationClassContext/<id>.png`` (mmsegmentation's ``pascal_context.py``): the class
  mask of the Context json (ids of the 459-label list) becomes the position of the id among the 60 sorted ids
  below (0 = background, 1..59 = the PC-59 classes in alphabetical order).

Raw values that no used class has (the 11 unused COCO ids, or an id outside the tables) become 255 (ignored);
the converters above would leave them unchanged, as a bogus class. :func:`unexpected_values` lists them so the
caller can say so. The tables come from the packaged class lists, not from numbers typed here twice.
"""

from __future__ import annotations

import functools

import numpy as np

from ..vocab import load_vocabulary

IGNORE = 255

#: PASCAL Context: the 459-label ids of background (0) and the 59 classes, sorted (mmsegmentation's ``_mapping``);
#: position k is PC-60 id k. The names follow the psc class list (checked by a test).
CONTEXT_459_IDS: tuple[int, ...] = (
    0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113, 115,
    144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326, 347, 349,
    354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)


@functools.lru_cache(maxsize=None)
def coco_stuff_used_ids() -> tuple[int, ...]:
    """The 171 COCO ids of COCO-Stuff 164k's classes (things 1..90 with gaps, stuff 92..182), in order."""
    return tuple(cid for cid in load_vocabulary("coco_stuff").ids if cid <= 182)


@functools.lru_cache(maxsize=None)
def coco_thing_ids() -> tuple[int, ...]:
    """The 80 COCO thing ids, in category-id order."""
    return tuple(load_vocabulary("coco_object").ids)


@functools.lru_cache(maxsize=None)
def stuff_train_id_table() -> np.ndarray:
    """uint8[256]: raw stuffthingmaps value -> COCO-Stuff-171 train id (255 unlabeled / unknown)."""
    table = np.full(256, IGNORE, dtype=np.uint8)
    for train_id, cid in enumerate(coco_stuff_used_ids()):
        table[cid - 1] = train_id
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=None)
def object_train_id_table() -> np.ndarray:
    """uint8[256]: raw stuffthingmaps value -> COCO-Object id (0 background incl. stuff and unlabeled, 1..80)."""
    table = np.full(256, IGNORE, dtype=np.uint8)
    things = coco_thing_ids()
    for cid in coco_stuff_used_ids():
        if cid not in things:
            table[cid - 1] = 0
    for k, cid in enumerate(things):
        table[cid - 1] = k + 1
    table[IGNORE] = 0
    table.setflags(write=False)
    return table


def _raw_values_known() -> np.ndarray:
    known = np.zeros(256, dtype=bool)
    known[[cid - 1 for cid in coco_stuff_used_ids()]] = True
    known[IGNORE] = True
    return known


def unexpected_values(raw: np.ndarray) -> list[int]:
    """Values of a raw stuffthingmaps array that no COCO-Stuff class has (and that are not 255)."""
    present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256)[:256])
    known = _raw_values_known()
    return [int(v) for v in present if not known[v]]


def apply_table(raw: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Look every pixel up in a 256-entry table (the raw map must be 8-bit)."""
    if raw.dtype != np.uint8:
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            raise ValueError(f"raw label values outside 0..255 ({int(raw.min())}..{int(raw.max())})")
        raw = raw.astype(np.uint8)
    return table[raw]


def context_index(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """A Context class mask (459-label ids) -> uint8 PC-60 ids, and the ids that are not among the 60.

    Pixels with an unknown id are set to 255; mmsegmentation's converter stops at the first such image.
    """
    ids = np.asarray(CONTEXT_459_IDS)
    pos = np.searchsorted(ids, mask.ravel())
    pos_clipped = np.minimum(pos, len(ids) - 1)
    ok = ids[pos_clipped] == mask.ravel()
    out = np.where(ok, pos_clipped, IGNORE).astype(np.uint8).reshape(mask.shape)
    unknown = sorted({int(v) for v in np.unique(mask.ravel()[~ok])})
    return out, unknown


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO-style segmentation (polygons, uncompressed RLE, or compressed RLE) -> bool [H, W]."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        counts = segmentation["counts"]
        rle = {"size": list(segmentation.get("size") or (height, width)),
               "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"unknown segmentation format {type(segmentation).__name__}")
    m = mask_utils.decode(rle)
    if m.ndim == 3:
        m = m[..., 0]
    if m.shape != (height, width):
        raise ValueError(f"segmentation is {m.shape[1]}x{m.shape[0]} (WxH), its image {width}x{height}")
    return m.astype(bool)


def context_class_mask(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """The Detail API's class mask: zeros, then each annotation's pixels set to its category id, in file
    order (a later annotation overwrites an earlier one)."""
    mask = np.zeros((height, width), dtype=np.int32)
    for ann in annotations:
        mask[decode_segmentation(ann["segmentation"], height, width)] = int(ann["category_id"])
    return mask

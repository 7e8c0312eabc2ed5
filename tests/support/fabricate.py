"""Fabricate a mini tree of the six benchmarks in their mmsegmentation layout, with each format's quirks.

    python tests/fabricate.py DIR [--images N]

- VOC: palette PNGs (P mode, VOC colour map) with 255 object borders; val list in
  ImageSets/Segmentation/val.txt.
- Pascal Context: SegmentationClassContext greyscale PNGs 0..59 (mmseg-converted).
- ADE20K: raw annotations 0..150 (0 = other).
- COCO-Stuff 164k: raw stuffthingmaps (value = COCO id - 1, 255 unlabeled) + `_labelTrainIds.png`
  (mmseg, 0..170) + `_instanceTrainIds.png` (COCO-Object as the peers' converter: 1..80 things, 0 for
  stuff and unlabeled).
- COCO instances_val2017.json: polygons and a crowd RLE, overlapping instances (first wins).
- Cityscapes: leftImg8bit/val/<city>/<id>_leftImg8bit.png (RGB PNG, 2:1) and gtFine/val/<city>/
  <id>_gtFine_labelIds.png (official label ids 0..33, void ids among them), two cities.
Sizes differ per image; the contents are random but deterministic. Returns nothing; writes files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from pnp_ovss.io import default_palette  # noqa: E402
from pnp_ovss.vocab import load_vocabulary  # noqa: E402

SIZES = [(60, 80), (48, 64), (64, 56), (40, 72)]
GPT4O = Path(__file__).resolve().parents[3] / "shared" / "data" / "gpt4o"


def known_ids(name: str, n: int, fallback: list[str]) -> list[str]:
    """The first ``n`` image ids of the authors' GPT-4o answers for ``name`` (so the fabricated tree can be
    labelled from those files), or ``fallback`` where the files are not at ../shared."""
    path = GPT4O / f"{name}_classification_noboundary.json"
    if not path.is_file():
        return fallback[:n]
    return sorted(json.loads(path.read_text()))[:n]


def _jpeg(path: Path, h: int, w: int, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=90)


def _png(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        im.putpalette(default_palette().reshape(-1).tolist())
    im.save(path)


def _blocks(h: int, w: int, values: list[int], rng) -> np.ndarray:
    """A label map of vertical bands of the given values plus a rectangle of the first value."""
    out = np.zeros((h, w), dtype=np.int64)
    edges = np.linspace(0, w, len(values) + 1).astype(int)
    for v, a, b in zip(values, edges[:-1], edges[1:]):
        out[:, a:b] = v
    out[h // 4 : h // 2, w // 4 : w // 2] = values[0]
    return out


def voc(root: Path, n: int, rng) -> list[str]:
    base = root / "VOCdevkit" / "VOC2012"
    ids = known_ids("voc", n, [f"2007_{i:06d}" for i in range(n)])
    for k, image_id in enumerate(ids):
        h, w = SIZES[k % len(SIZES)]
        _jpeg(base / "JPEGImages" / f"{image_id}.jpg", h, w, rng)
        gt = _blocks(h, w, [0, int(rng.integers(1, 21)), int(rng.integers(1, 21))], rng)
        gt[:, w // 3] = 255  # object borders
        gt[h // 4, :] = 255
        _png(base / "SegmentationClass" / f"{image_id}.png", gt, palette=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return ids


def psc(root: Path, n: int, rng) -> list[str]:
    base = root / "VOCdevkit" / "VOC2010"
    ids = known_ids("psc", n, [f"2008_{i:06d}" for i in range(n)])
    for k, image_id in enumerate(ids):
        h, w = SIZES[k % len(SIZES)]
        _jpeg(base / "JPEGImages" / f"{image_id}.jpg", h, w, rng)
        _png(base / "SegmentationClassContext" / f"{image_id}.png", _blocks(h, w, [0, 15, int(rng.integers(1, 60))], rng))
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "SegmentationContext" / "val.txt").write_text("\n".join(ids) + "\n")
    return ids


def ade20k(root: Path, n: int, rng) -> list[str]:
    base = root / "ADEChallengeData2016"
    ids = [f"ADE_val_{i:08d}" for i in range(1, n + 1)]
    for k, image_id in enumerate(ids):
        h, w = SIZES[k % len(SIZES)]
        _jpeg(base / "images" / "validation" / f"{image_id}.jpg", h, w, rng)
        _png(base / "annotations" / "validation" / f"{image_id}.png", _blocks(h, w, [0, 1, int(rng.integers(2, 151))], rng))
    return ids


def coco(root: Path, n: int, rng) -> list[str]:
    """coco_stuff164k (raw, labelTrainIds, instanceTrainIds) + coco/annotations/instances_val2017.json."""
    base = root / "coco_stuff164k"
    stuff_vocab = load_vocabulary("coco_stuff")
    used = [cid for cid in stuff_vocab.ids if cid <= 182]  # 171 train ids
    thing_ids = list(load_vocabulary("coco_object").ids)
    ids_int = [int(i) for i in known_ids("coco_object", n, [f"{139 + 1000 * i:012d}" for i in range(n)])]
    images, annotations = [], []
    ann_id = 1
    for k, iid in enumerate(ids_int):
        image_id = f"{iid:012d}"
        h, w = SIZES[k % len(SIZES)]
        _jpeg(base / "images" / "val2017" / f"{image_id}.jpg", h, w, rng)
        person, dog, grass = 1, 18, 124
        coco_ids = _blocks(h, w, [grass, person, dog], rng)  # COCO ids per pixel
        coco_ids[0:3, :] = 0  # unlabeled strip
        raw = np.where(coco_ids == 0, 255, coco_ids - 1)
        _png(base / "annotations" / "val2017" / f"{image_id}.png", raw)
        train = np.full((h, w), 255, dtype=np.int64)
        for t, cid in enumerate(used):
            train[coco_ids == cid] = t
        _png(base / "annotations" / "val2017" / f"{image_id}_labelTrainIds.png", train)
        inst = np.zeros((h, w), dtype=np.int64)
        for t, cid in enumerate(thing_ids):
            inst[coco_ids == cid] = t + 1
        _png(base / "annotations" / "val2017" / f"{image_id}_instanceTrainIds.png", inst)
        images.append({"id": iid, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        # polygon person (rectangle), then an overlapping dog polygon (person wins on the overlap),
        # then a crowd RLE of a cat covering the top-left corner
        annotations.append({"id": ann_id, "image_id": iid, "category_id": person, "iscrowd": 0,
                            "segmentation": [[2, 2, 30, 2, 30, 20, 2, 20]], "area": 1, "bbox": [2, 2, 28, 18]})
        annotations.append({"id": ann_id + 1, "image_id": iid, "category_id": dog, "iscrowd": 0,
                            "segmentation": [[20, 10, 40, 10, 40, 30, 20, 30]], "area": 1, "bbox": [20, 10, 20, 20]})
        crowd = np.zeros((h, w), dtype=np.uint8)
        crowd[h - 10 :, w - 10 :] = 1
        counts = _rle_counts(crowd)
        annotations.append({"id": ann_id + 2, "image_id": iid, "category_id": 17, "iscrowd": 1,
                            "segmentation": {"size": [h, w], "counts": counts}, "area": 100, "bbox": [w - 10, h - 10, 10, 10]})
        ann_id += 3
    # images listed in a non-sorted order, as in the real file
    images = images[::-1]
    cats = [{"id": cid, "name": name, "supercategory": "x"} for cid, name in zip(thing_ids, load_vocabulary("coco_object").names)]
    (root / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "coco" / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": cats})
    )
    return [f"{im['id']:012d}" for im in images]


def _rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, starting with zeros)."""
    flat = mask.ravel(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            run, current = 0, v
        run += 1
    counts.append(run)
    return [int(c) for c in counts]


#: label ids of a fabricated Cityscapes map: road, car, sky, and the void ids static (4) and parking (9)
CITYSCAPES_LABEL_IDS = [7, 26, 23, 4, 9]


def cityscapes_ids(n: int) -> list[str]:
    return [f"{('frankfurt', 'lindau')[k % 2]}_{k:06d}_{19 + k:06d}" for k in range(n)]


def cityscapes(root: Path, n: int, rng) -> list[str]:
    base = root / "cityscapes"
    ids = cityscapes_ids(n)
    for k, image_id in enumerate(ids):
        h, w = (32, 64) if k % 2 == 0 else (24, 48)
        city = image_id.split("_", 1)[0]
        path = base / "leftImg8bit" / "val" / city / f"{image_id}_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        _png(base / "gtFine" / "val" / city / f"{image_id}_gtFine_labelIds.png", _blocks(h, w, CITYSCAPES_LABEL_IDS, rng))
    return sorted(ids)


def fabricate(root: Path, n: int = 4, seed: int = 0) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    root = Path(root)
    ids = {"voc": voc(root, n, rng), "psc": psc(root, n, rng), "ade20k": ade20k(root, n, rng)}
    ids["coco_object"] = ids["coco_stuff"] = coco(root, n, rng)
    ids["cityscapes"] = cityscapes(root, n, rng)
    return ids


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--images", type=int, default=4)
    a = ap.parse_args()
    fabricate(Path(a.root), a.images)
    print(f"mini tree written to {a.root}")

"""Fabricate tiny copies of the official benchmark downloads, in their distributed structure.

    python tests/fabricate_downloads.py DIR [--images N]

- VOCtrainval_11-May-2012.tar (uncompressed tar, ``VOCdevkit/VOC2012/...``): val + one train image, palette
  SegmentationClass PNGs, ImageSets/Segmentation/{train,val,trainval}.txt, an Annotations xml.
- VOCtrainval_03-May-2010.tar (``VOCdevkit/VOC2010/JPEGImages``) + trainval_merged.json in the Detail schema
  (images with phase/height/width, annos_segmentation with compressed and uncompressed RLE, overlapping
  annotations, categories, parts, annos_occlusion) — val and train images interleaved.
- ADEChallengeData2016.zip: validation and one training image, objectInfo150.txt, sceneCategories.txt.
- val2017.zip, stuffthingmaps_trainval2017.zip (raw ids incl. stuff, 255 and one train map),
  annotations_trainval2017.zip (instances_val2017.json with polygons and a crowd RLE, images unsorted).
- leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip: val images of two cities (+ a train and a test image),
  every gtFine file of an image (labelIds with void ids, instanceIds, color, polygons).

:func:`fabricate_downloads` returns what the test needs to compute the expected files on its own: the ids,
the raw stuff maps, and the Context annotations as (category id, bool mask) in file order.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.fabricate import SIZES, _rle_counts, known_ids  # noqa: E402


def _jpeg_bytes(h: int, w: int, rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_bytes(arr: np.ndarray, palette: list[int] | None = None) -> bytes:
    im = Image.fromarray(arr.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        im.putpalette(palette)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        dirs = sorted({name.rsplit("/", 1)[0] + "/" for name in members if "/" in name})
        for d in dirs:  # the official zips list their folders too
            zf.writestr(d, b"")
        for name, data in members.items():
            zf.writestr(name, data)


def _compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")}


def voc2012(root: Path, n: int, rng, sizes=SIZES) -> dict:
    val = known_ids("voc", n, [f"2007_{i:06d}" for i in range(n)])
    train = ["2007_000032"]
    palette = [v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)]
    members = {}
    base = "VOCdevkit/VOC2012"
    for k, image_id in enumerate(val + train):
        h, w = sizes[k % len(sizes)]
        seg = rng.integers(0, 21, (h, w))
        seg[:, 0] = 255
        members[f"{base}/JPEGImages/{image_id}.jpg"] = _jpeg_bytes(h, w, rng)
        members[f"{base}/SegmentationClass/{image_id}.png"] = _png_bytes(seg, palette)
        members[f"{base}/Annotations/{image_id}.xml"] = b"<annotation/>"
    members[f"{base}/ImageSets/Segmentation/val.txt"] = ("\n".join(val) + "\n").encode()
    members[f"{base}/ImageSets/Segmentation/train.txt"] = ("\n".join(train) + "\n").encode()
    members[f"{base}/ImageSets/Segmentation/trainval.txt"] = ("\n".join(sorted(train + val)) + "\n").encode()
    _tar(root / "VOCtrainval_11-May-2012.tar", members)
    return {"val": val, "train": train, "members": members}


#: a few PASCAL Context 459-label ids: aeroplane, person, sky, wall, wood (and one train-only: grass)
CONTEXT_SAMPLE = (2, 284, 360, 440, 458, 187)


def context(root: Path, n: int, rng, sizes=SIZES) -> dict:
    val = known_ids("psc", n, [f"2008_{i:06d}" for i in range(n)])
    train = ["2008_900002", "2008_900003"]  # not among the val ids
    images, annos, members, expected_anns = [], [], {}, {}
    order = [(train[0], "train")] + [(v, "val") for v in val[:1]] + [(train[1], "train")] + [(v, "val") for v in val[1:]]
    ann_id = 1
    for k, (stem, phase) in enumerate(order):
        h, w = sizes[k % len(sizes)]
        image_id = int(stem.replace("_", ""))
        images.append({"image_id": image_id, "file_name": f"{stem}.jpg", "phase": phase, "height": h, "width": w,
                       "date_captured": "", "url": ""})
        members[f"VOCdevkit/VOC2010/JPEGImages/{stem}.jpg"] = _jpeg_bytes(h, w, rng)
        anns = []
        # a big sky region, a person overlapping it (later: wins), a wall strip in uncompressed RLE
        sky = np.zeros((h, w), dtype=bool)
        sky[: h // 2, :] = True
        person = np.zeros((h, w), dtype=bool)
        person[h // 4 : 3 * h // 4, w // 4 : w // 2] = True
        wall = np.zeros((h, w), dtype=bool)
        wall[:, -5:] = True
        cat = 187 if phase == "train" else int(rng.choice([2, 458]))
        other = np.zeros((h, w), dtype=bool)
        other[-4:, : w // 3] = True
        for cat_id, m, compressed in ((360, sky, True), (284, person, True), (440, wall, False), (cat, other, True)):
            seg = _compressed_rle(m) if compressed else {"size": [h, w], "counts": _rle_counts(m.astype(np.uint8))}
            annos.append({"id": ann_id, "image_id": image_id, "category_id": cat_id, "segmentation": seg,
                          "area": int(m.sum()), "bbox": [0, 0, w, h], "iscrowd": 0, "parts": []})
            anns.append((cat_id, m))
            ann_id += 1
        expected_anns[stem] = {"shape": (h, w), "annotations": anns}
    categories = [{"category_id": c, "name": f"c{c}", "supercategory": "object", "onlysemantic": 0, "parts": []}
                  for c in CONTEXT_SAMPLE]
    data = {"info": {"description": "fabricated"}, "images": images, "annos_segmentation": annos,
            "annos_occlusion": [], "annos_joints": [], "categories": categories, "parts": []}
    (root / "trainval_merged.json").write_text(json.dumps(data))
    _tar(root / "VOCtrainval_03-May-2010.tar", members)
    return {"val": val, "train": train, "members": members, "annotations": expected_anns}


def ade20k(root: Path, n: int, rng, sizes=SIZES) -> dict:
    base = "ADEChallengeData2016"
    val = [f"ADE_val_{i:08d}" for i in range(1, n + 1)]
    members = {}
    for k, stem in enumerate(val + ["ADE_train_00000001"]):
        h, w = sizes[k % len(sizes)]
        split = "training" if "train" in stem else "validation"
        members[f"{base}/images/{split}/{stem}.jpg"] = _jpeg_bytes(h, w, rng)
        members[f"{base}/annotations/{split}/{stem}.png"] = _png_bytes(rng.integers(0, 151, (h, w)))
    members[f"{base}/objectInfo150.txt"] = b"Idx\tRatio\tTrain\tVal\tName\n1\t0.1\t1\t1\twall\n"
    members[f"{base}/sceneCategories.txt"] = b"ADE_val_00000001 abbey\n"
    _zip(root / "ADEChallengeData2016.zip", members)
    return {"val": val, "members": members}


def coco(root: Path, n: int, rng, sizes=SIZES) -> dict:
    ids = [int(i) for i in known_ids("coco_object", n, [f"{139 + 1000 * i:012d}" for i in range(n)])]
    images, annotations, img_members, map_members, raw_maps = [], [], {}, {}, {}
    # raw values: things (person 0, dog 17, toothbrush 89), stuff (banner 91, grass 123, wood 181), unlabeled 255
    values = [0, 17, 89, 91, 123, 181, 255]
    for k, iid in enumerate(ids):
        stem = f"{iid:012d}"
        h, w = sizes[k % len(sizes)]
        # regions of 8x8 pixels, as label maps are made of regions (their PNGs then cost what real ones do)
        blocks = rng.integers(0, len(values), (-(-h // 8), -(-w // 8)))
        raw = np.array(values, dtype=np.uint8)[np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:h, :w]]
        raw[0, : len(values)] = values  # every value present
        raw_maps[stem] = raw
        img_members[f"val2017/{stem}.jpg"] = _jpeg_bytes(h, w, rng)
        map_members[f"val2017/{stem}.png"] = _png_bytes(raw)
        images.append({"id": iid, "file_name": f"{stem}.jpg", "height": h, "width": w})
        annotations.append({"id": 3 * k + 1, "image_id": iid, "category_id": 1, "iscrowd": 0,
                            "segmentation": [[2, 2, 30, 2, 30, 20, 2, 20]], "area": 1, "bbox": [2, 2, 28, 18]})
        crowd = np.zeros((h, w), dtype=np.uint8)
        crowd[h - 10 :, w - 10 :] = 1
        annotations.append({"id": 3 * k + 2, "image_id": iid, "category_id": 17, "iscrowd": 1, "area": 100,
                            "segmentation": {"size": [h, w], "counts": _rle_counts(crowd)}, "bbox": [0, 0, 1, 1]})
    map_members["train2017/000000000009.png"] = _png_bytes(np.zeros((8, 8)))
    images = images[::-1]  # not sorted, as in the real file
    cats = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 17, "name": "cat", "supercategory": "animal"}]
    instances = json.dumps({"info": {}, "images": images, "annotations": annotations, "categories": cats}).encode()
    _zip(root / "val2017.zip", img_members)
    _zip(root / "stuffthingmaps_trainval2017.zip", map_members)
    _zip(root / "annotations_trainval2017.zip", {"annotations/instances_val2017.json": instances,
                                                 "annotations/captions_val2017.json": b"{}"})
    return {"ids": [f"{im['id']:012d}" for im in images], "raw": raw_maps, "images": img_members,
            "instances": instances}


def _png_rgb_bytes(h: int, w: int, rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def cityscapes(root: Path, n: int, rng, sizes=SIZES) -> dict:
    """leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip: val images of two cities plus one train and one
    test image (not prepared), label ids 0..33 with void ids, and the other gtFine files of each image."""
    val = [f"{('frankfurt', 'munster')[k % 2]}_{k:06d}_{19 + k:06d}" for k in range(n)]
    images, labels = {"README": b"Cityscapes\n", "license.txt": b"license\n"}, {"README": b"gtFine\n"}
    stems = [("val", s) for s in val] + [("train", "aachen_000000_000019"), ("test", "berlin_000000_000019")]
    for k, (split, stem) in enumerate(stems):
        h, w = sizes[k % len(sizes)]
        city = stem.split("_", 1)[0]
        images[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = _png_rgb_bytes(h, w, rng)
        gt = f"gtFine/{split}/{city}/{stem}_gtFine_"
        labels[gt + "labelIds.png"] = _png_bytes(rng.integers(0, 34, (h, w)))
        labels[gt + "instanceIds.png"] = _png_bytes(rng.integers(0, 34, (h, w)))
        labels[gt + "color.png"] = _png_rgb_bytes(h, w, rng)
        labels[gt + "polygons.json"] = b"{}"
    _zip(root / "leftImg8bit_trainvaltest.zip", images)
    _zip(root / "gtFine_trainvaltest.zip", labels)
    return {"val": val, "images": images, "labels": labels}


def fabricate_downloads(root: Path, n: int = 3, seed: int = 0, sizes=SIZES) -> dict:
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {"voc": voc2012(root, n, rng, sizes), "psc": context(root, n, rng, sizes),
            "ade20k": ade20k(root, n, rng, sizes), "coco": coco(root, n, rng, sizes),
            "cityscapes": cityscapes(root, n, rng, sizes)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--images", type=int, default=3)
    a = ap.parse_args()
    fabricate_downloads(Path(a.root), a.images)
    print(f"downloads written to {a.root}")

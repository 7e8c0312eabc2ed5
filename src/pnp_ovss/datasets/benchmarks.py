"""Adapters for the five benchmarks in their mmsegmentation layout under ``data_root``.

Layouts (see docs/datasets.md "Layouts"):
  voc          VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt}
  psc          VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext, ImageSets/SegmentationContext/val.txt}
  ade20k       ADEChallengeData2016/{images,annotations}/validation
  coco_stuff   coco_stuff164k/{images/val2017, annotations/val2017/<id>.png (raw) and <id>_labelTrainIds.png}
  coco_object  coco_stuff164k/images/val2017, coco_stuff164k/annotations/val2017/<id>_instanceTrainIds.png
               (mmseg) and instances_val2017.json (pnp) in coco/annotations/ or coco_stuff164k/annotations/
  cityscapes   cityscapes/leftImg8bit/val/<city>/<id>_leftImg8bit.png, cityscapes/gtFine/val/<city>/<id>_gtFine_labelIds.png
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..io import read_label_png
from ..protocols import IGNORE
from ..vocab import load_vocabulary
from .base import Dataset, require_dir, require_file


def _made_by_prepare(name: str, where: str) -> str:
    """The hint for a missing benchmark folder: its layout, and the command that makes it."""
    return f"{where}; `pnp-ovss prepare --dataset {name} --downloads DIR --data-root <data_root>` makes it from the official downloads"


def _read_id_list(path: Path) -> list[str]:
    ids = [line.strip().split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: split file is empty")
    return ids


def _reduce_zero_label(gt: np.ndarray) -> np.ndarray:
    """mmseg reduce_zero_label: 0 -> 255, c -> c - 1, 255 stays 255."""
    out = gt - 1
    out[gt == 0] = IGNORE
    out[gt == IGNORE] = IGNORE
    return out


class VOC(Dataset):
    name = "voc"

    def __init__(self, data_root: Path, mmseg_variant: str | None = None):
        super().__init__(Path(data_root) / "VOCdevkit" / "VOC2012", load_vocabulary("voc"))
        self.mmseg_variant = mmseg_variant or "voc21"
        require_dir(self.root, "PASCAL VOC 2012 folder", _made_by_prepare("voc", "<data_root>/VOCdevkit/VOC2012 (mmseg layout)"))
        require_dir(self.root / "JPEGImages", "VOC JPEGImages folder")
        require_dir(self.root / "SegmentationClass", "VOC SegmentationClass folder (palette PNGs)")

    def split_file(self) -> Path:
        for p in (self.root / "ImageSets" / "Segmentation" / "val.txt", self.root / "val.txt"):
            if p.is_file():
                return p
        raise DatasetError(
            f"{self.root / 'ImageSets' / 'Segmentation' / 'val.txt'}: VOC val split not found "
            f"(the released code also looked for {self.root / 'val.txt'})"
        )

    def image_ids(self) -> list[str]:
        return _read_id_list(self.split_file())

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        gt = self._read_annotation(image_id)
        if protocol == "pnp":
            gt = gt.copy()
            gt[gt == IGNORE] = 0  # §1.1: boundaries scored as background
            return gt
        if self.mmseg_variant == "voc20":
            return _reduce_zero_label(gt)
        return gt


class PascalContext(Dataset):
    name = "psc"

    def __init__(self, data_root: Path, mmseg_variant: str | None = None):
        super().__init__(Path(data_root) / "VOCdevkit" / "VOC2010", load_vocabulary("psc"))
        self.mmseg_variant = mmseg_variant or "pc59"
        require_dir(self.root, "Pascal Context (VOC2010) folder", _made_by_prepare("psc", "<data_root>/VOCdevkit/VOC2010 (mmseg layout)"))
        require_dir(self.root / "JPEGImages", "VOC2010 JPEGImages folder")
        require_dir(
            self.root / "SegmentationClassContext",
            "SegmentationClassContext folder",
            _made_by_prepare("psc", "the mmseg-converted Pascal Context labels (0 = background, 1..59)"),
        )

    def image_ids(self) -> list[str]:
        split = require_file(
            self.root / "ImageSets" / "SegmentationContext" / "val.txt",
            "Pascal Context val split",
            _made_by_prepare("psc", "ImageSets/SegmentationContext/val.txt as written by mmseg's pascal_context.py"),
        )
        return _read_id_list(split)

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClassContext" / f"{image_id}.png"

    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        gt = self._read_annotation(image_id)
        if protocol == "mmseg" and self.mmseg_variant == "pc59":
            return _reduce_zero_label(gt)
        return gt


class ADE20K(Dataset):
    name = "ade20k"
    unnormalised_input = True

    def __init__(self, data_root: Path, mmseg_variant: str | None = None):
        super().__init__(Path(data_root) / "ADEChallengeData2016", load_vocabulary("ade20k"))
        require_dir(self.root, "ADE20K folder", _made_by_prepare("ade20k", "<data_root>/ADEChallengeData2016"))
        require_dir(self.root / "images" / "validation", "ADE20K validation images")
        require_dir(self.root / "annotations" / "validation", "ADE20K validation annotations")

    def image_ids(self) -> list[str]:
        ids = sorted(p.stem for p in (self.root / "images" / "validation").glob("*.jpg"))
        if not ids:
            raise DatasetError(f"{self.root / 'images' / 'validation'}: no .jpg images")
        return ids

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / "validation" / f"{image_id}.jpg"

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "annotations" / "validation" / f"{image_id}.png"

    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        gt = self._read_annotation(image_id)
        if protocol == "mmseg":
            return _reduce_zero_label(gt)
        return gt  # §1.1: raw, 0 = "other" counted


def find_instances_json(data_root: Path) -> Path | None:
    for p in (
        Path(data_root) / "coco" / "annotations" / "instances_val2017.json",
        Path(data_root) / "coco_stuff164k" / "annotations" / "instances_val2017.json",
    ):
        if p.is_file():
            return p
    return None


@functools.lru_cache(maxsize=4)
def _load_instances(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{path}: no {key!r} list; expected a COCO instances file")
    by_image: dict[int, list] = {}
    for ann in data["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    return {"images": data["images"], "by_image": by_image}


def rasterise_instances(anns: list[dict], height: int, width: int) -> np.ndarray:
    """§1.3: zero mask; in annotation order (crowd included) write each category id into pixels that are
    inside the instance and still 0 (first annotation wins)."""
    from pycocotools import mask as mask_utils

    out = np.zeros((height, width), dtype=np.int64)
    for ann in anns:
        seg = ann["segmentation"]
        if isinstance(seg, list):
            rles = mask_utils.frPyObjects(seg, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = seg
        m = mask_utils.decode(rle).astype(bool)
        out[m & (out == 0)] = int(ann["category_id"])
    return out


class _COCOBase(Dataset):

    def __init__(self, data_root: Path, vocab_name: str):
        self.data_root = Path(data_root)
        super().__init__(self.data_root / "coco_stuff164k", load_vocabulary(vocab_name))
        require_dir(self.root, "COCO-Stuff 164k folder", _made_by_prepare(vocab_name, "<data_root>/coco_stuff164k (mmseg layout)"))
        require_dir(self.root / "images" / "val2017", "COCO val2017 images")
        require_dir(self.root / "annotations" / "val2017", "COCO-Stuff val2017 annotations")
        self.instances_json = find_instances_json(self.data_root)

    def image_ids(self) -> list[str]:
        if self.instances_json is not None:
            # the released code's order: the image list of instances_val2017.json
            return [f"{int(im['id']):012d}" for im in _load_instances(str(self.instances_json))["images"]]
        ids = sorted(p.stem for p in (self.root / "images" / "val2017").glob("*.jpg"))
        if not ids:
            raise DatasetError(f"{self.root / 'images' / 'val2017'}: no .jpg images")
        return ids

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / "val2017" / f"{image_id}.jpg"

    def gpt4o_key(self, image_id: str) -> str:
        return f"{int(image_id):012d}"


class COCOStuff(_COCOBase):
    name = "coco_stuff"

    def __init__(self, data_root: Path, mmseg_variant: str | None = None):
        super().__init__(data_root, "coco_stuff")

    def annotation_path(self, image_id: str, protocol: str = "pnp") -> Path:
        suffix = "_labelTrainIds" if protocol == "mmseg" else ""
        return self.root / "annotations" / "val2017" / f"{image_id}{suffix}.png"

    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        path = self.annotation_path(image_id, protocol)
        gt = read_label_png(path)
        self._check_size(image_id, gt.shape, path)
        if protocol == "mmseg":
            return gt
        # §1.1/§1.4: raw stuffthingmaps (value = COCO id - 1): 255 -> 0, v -> v + 1 (vectorised)
        return np.where(gt == IGNORE, 0, gt + 1)


class COCOObject(_COCOBase):
    name = "coco_object"

    @classmethod
    def from_config(cls, cfg: dict) -> "COCOObject":
        return cls(Path(cfg.get("data_root") or "data"), cfg.get("mmseg_variant"), protocol=cfg.get("protocol", "pnp"))

    def __init__(self, data_root: Path, mmseg_variant: str | None = None, protocol: str = "pnp"):
        super().__init__(data_root, "coco_object")
        if protocol == "pnp" and self.instances_json is None:
            raise DatasetError(
                f"{self.data_root / 'coco' / 'annotations' / 'instances_val2017.json'}: COCO instances file "
                "not found; the pnp protocol rasterises COCO-Object ground truth from it "
                "(also looked in coco_stuff164k/annotations/)"
            )

    def annotation_path(self, image_id: str, protocol: str = "pnp") -> Path:
        if protocol == "mmseg":
            return self.root / "annotations" / "val2017" / f"{image_id}_instanceTrainIds.png"
        return self.instances_json

    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        if protocol == "mmseg":
            path = self.annotation_path(image_id, "mmseg")
            gt = read_label_png(path)
            self._check_size(image_id, gt.shape, path)
            return gt
        inst = _load_instances(str(self.instances_json))
        h, w = self.image_size(image_id)
        return rasterise_instances(inst["by_image"].get(int(image_id), []), h, w)


#: cityscapesscripts' label table (helpers/labels.py): label id -> train id, 255 = not evaluated. Label ids 0..6,
#: 9, 10, 14, 15, 16, 18, 29 and 30 (unlabeled, ego vehicle, ..., parking, rail track, guard rail, bridge, tunnel,
#: polegroup, caravan, trailer) are void; license plate (-1) never appears in a labelIds PNG.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
    28: 15, 31: 16, 32: 17, 33: 18,
}


def cityscapes_dataset_id_table() -> np.ndarray:
    """[256] label id -> dataset id (train id + 1; 0 = void), the ids our label maps use."""
    table = np.zeros(256, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        table[label_id] = train_id + 1
    return table


class Cityscapes(Dataset):
    """Cityscapes val (500 images of 2048x1024, fine annotations). Ground truth is read from the official
    ``*_gtFine_labelIds.png`` and mapped with cityscapesscripts' table to dataset ids 1..19 (train id + 1) with
    0 for void; ``mmseg`` scores train ids 0..18 with void ignored (255), mmseg's ``city19``; ``pnp`` scores
    dataset ids with void counted as class 0, as the released code counts ADE20K's "other"."""

    name = "cityscapes"
    IMAGE_SUFFIX = "_leftImg8bit.png"
    LABEL_SUFFIX = "_gtFine_labelIds.png"

    def __init__(self, data_root: Path, mmseg_variant: str | None = None):
        super().__init__(Path(data_root) / "cityscapes", load_vocabulary("cityscapes"))
        require_dir(self.root, "Cityscapes folder",
                    _made_by_prepare("cityscapes", "<data_root>/cityscapes with leftImg8bit/ and gtFine/"))
        require_dir(self.root / "leftImg8bit" / "val", "Cityscapes leftImg8bit/val folder",
                    "the val images by city, from leftImg8bit_trainvaltest.zip")
        require_dir(self.root / "gtFine" / "val", "Cityscapes gtFine/val folder",
                    "the fine annotations by city, from gtFine_trainvaltest.zip")
        self._cities: dict[str, str] | None = None

    def _city_of(self) -> dict[str, str]:
        if self._cities is None:
            cities = {}
            for path in (self.root / "leftImg8bit" / "val").glob(f"*/*{self.IMAGE_SUFFIX}"):
                cities[path.name[: -len(self.IMAGE_SUFFIX)]] = path.parent.name
            self._cities = cities
        return self._cities

    def image_ids(self) -> list[str]:
        ids = sorted(self._city_of())
        if not ids:
            raise DatasetError(f"{self.root / 'leftImg8bit' / 'val'}: no <city>/*{self.IMAGE_SUFFIX} images")
        return ids

    def _city(self, image_id: str) -> str:
        # an id is <city>_<sequence>_<frame>; the index knows it, the prefix is its fallback
        return self._city_of().get(image_id) or image_id.split("_", 1)[0]

    def image_path(self, image_id: str) -> Path:
        return self.root / "leftImg8bit" / "val" / self._city(image_id) / f"{image_id}{self.IMAGE_SUFFIX}"

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "gtFine" / "val" / self._city(image_id) / f"{image_id}{self.LABEL_SUFFIX}"

    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        label_ids = self._read_annotation(image_id)
        if label_ids.max(initial=0) > 255:
            raise DatasetError(f"{self.annotation_path(image_id)}: values above 255; expected the 8-bit *{self.LABEL_SUFFIX} "
                               "of gtFine_trainvaltest.zip (label ids 0..33)")
        gt = cityscapes_dataset_id_table()[label_ids]
        if protocol == "mmseg":
            return _reduce_zero_label(gt)
        return gt

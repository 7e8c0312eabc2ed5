"""The dataset adapter interface. Adapters know nothing of Snakemake."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import (
    STORED, ImageHeader, ImageReading, default_palette, oversize_problem, read_header, read_image, read_label_png,
    reading_tag,
)
from ..vocab import Vocabulary
from ..errors import DatasetError

#: background channel rule of §6.4, per dataset in its descriptor (pnp_ovss.descriptors)
from ..descriptors import BACKGROUND_ALWAYS, BACKGROUND_FEWER_THAN_3, DESCRIPTORS  # noqa: F401 (re-exported)


class Dataset(ABC):
    """A split of images with a class vocabulary and (optionally) ground truth.

    Class ids are dataset ids (VOC/PSC/ADE: 1-based vocabulary position, COCO: category id,
    folder/demo: 1-based position); 0 is background in label maps.
    """

    name: str = ""
    #: True for ADE20K: the released code feeds it unnormalised, bilinear-resized (§3, §10.1)
    unnormalised_input: bool = False
    #: whether images are turned by their EXIF orientation unless ``reading.exif_orientation`` says otherwise
    #: (the benchmarks: no, their annotations follow the stored pixels; the user's own photos: yes)
    exif_by_default: bool = False

    def __init__(self, root: Path, vocabulary: Vocabulary):
        self.root = Path(root)
        self.vocabulary = vocabulary
        self.reading: ImageReading = STORED
        self._headers: dict[Path, ImageHeader] = {}

    @classmethod
    def from_config(cls, cfg: dict) -> "Dataset":
        """The adapter for a (normalised) config: a benchmark under ``data_root`` with its mmseg variant."""
        return cls(Path(cfg.get("data_root") or "data"), cfg.get("mmseg_variant"))

    @property
    def descriptor(self):
        """This dataset's :class:`pnp_ovss.descriptors.DatasetDescriptor`."""
        return DESCRIPTORS[self.name]

    @property
    def background_rule(self) -> str:
        """Refine §6.4, from the descriptor (an adapter outside the descriptors sets its own)."""
        return getattr(self, "_background_rule", None) or self.descriptor.background_rule

    @background_rule.setter
    def background_rule(self, rule: str) -> None:
        self._background_rule = rule

    # --- the split -------------------------------------------------------------------------
    @abstractmethod
    def image_ids(self) -> list[str]:
        """Image ids in the split's base order (ALGORITHM.md §1.1)."""

    @abstractmethod
    def image_path(self, image_id: str) -> Path:
        """The image given to the model."""

    def crf_image_path(self, image_id: str) -> Path:
        """The image used as the CRF's colour reference (the released code uses the same file except PSC)."""
        return self.image_path(image_id)

    # --- reading images (one reader for every stage: pnp_ovss.io.read_image) --------------------------
    def header(self, path: Path) -> ImageHeader:
        path = Path(path)
        if path not in self._headers:
            self._headers[path] = read_header(path)
        return self._headers[path]

    def read_image(self, image_id: str):
        """The image given to the model, uint8 RGB [H, W, 3] at its working size."""
        return read_image(self.image_path(image_id), self.reading)

    def read_crf_image(self, image_id: str):
        """The CRF's colour reference (and the overlays' picture), read like :meth:`read_image`."""
        return read_image(self.crf_image_path(image_id), self.reading)

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(H, W) of the image as people see it (the mask's size), from its header."""
        return self.header(self.image_path(image_id)).displayed(self.reading)

    def working_size(self, image_id: str) -> tuple[int, int]:
        """(H, W) the stages compute at: :meth:`image_size`, capped when ``reading.oversize: downscale``."""
        return self.header(self.crf_image_path(image_id)).working(self.reading)

    def gpt4o_key(self, image_id: str) -> str:
        """Key of this image in the authors' GPT-4o answer files."""
        return image_id

    # --- ground truth ------------------------------------------------------------------------
    @property
    def has_ground_truth(self) -> bool:
        return True

    @abstractmethod
    def annotation_path(self, image_id: str) -> Path:
        """The annotation file of an image (for messages and existence checks)."""

    @abstractmethod
    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        """Per-pixel evaluation ids of ``protocol`` (``pnp``: §1 transforms; ``mmseg``: train ids, 255 ignored)."""

    def pnp_ground_truth(self, image_id: str) -> np.ndarray:
        """Ground truth in dataset ids (0 = background/other/unlabeled), as the pnp protocol scores it."""
        return self.ground_truth(image_id, "pnp")

    def gt_class_ids(self, image_id: str) -> list[int]:
        """Dataset ids of the vocabulary classes present in the ground truth (the oracle labels)."""
        values = np.unique(self.pnp_ground_truth(image_id))
        return [int(v) for v in values if int(v) in self.vocabulary]

    # --- helpers -------------------------------------------------------------------------------
    @property
    def palette(self) -> np.ndarray:
        return default_palette()

    def _read_annotation(self, image_id: str) -> np.ndarray:
        """Read the annotation and check that its size matches the image."""
        ann_path = self.annotation_path(image_id)
        gt = read_label_png(ann_path)
        self._check_size(image_id, gt.shape, ann_path)
        return gt

    def _check_size(self, image_id: str, shape, ann_path) -> None:
        h, w = self.image_size(image_id)
        if tuple(shape[:2]) != (h, w):
            raise DatasetError(
                f"{ann_path}: annotation is {shape[1]}x{shape[0]} (WxH) but its image "
                f"{self.image_path(image_id)} is {w}x{h}; expected the same size"
            )


@dataclass
class ImageScan:
    """What the headers of a run's images say, read once at parse time (no decoding): per image, what the
    reader does beyond the released reading (its key tag, :func:`pnp_ovss.io.reading_tag`), and notes."""

    tags: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def scan_images(dataset: Dataset, image_ids: list[str], headers=None) -> ImageScan:
    """Read the header of every image (``headers``: a memo with ``header(path)``, e.g. :class:`pnp_ovss.identity.HeaderCache`, or None) and refuse, in one
    DatasetError naming each file, what cannot be used: a file PIL cannot open, an image above
    ``reading.max_pixels`` (unless ``reading.oversize: downscale``). Multi-frame files are noted (first frame
    used), and so are the files of a folder that are not images."""
    scan = ImageScan()
    problems, multi = [], []
    reading = dataset.reading
    for image_id in image_ids:
        paths = [Path(dataset.image_path(image_id))]
        crf = Path(dataset.crf_image_path(image_id))
        if crf != paths[0]:
            paths.append(crf)
        tags = []
        for path in paths:
            try:
                header = headers.header(path) if headers is not None else dataset.header(path)
            except DatasetError as exc:
                problems.append(str(exc))
                continue
            dataset._headers[path] = header
            problem = oversize_problem(path, header, reading)
            if problem:
                problems.append(problem)
            if header.frames > 1:
                multi.append(f"{path.name} ({header.frames} frames)")
            tags.append(reading_tag(header, reading))
        scan.tags[image_id] = None if not any(tags) else "|".join(t or "" for t in tags)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DatasetError(f"{len(problems)} image(s) cannot be used: " + "; ".join(problems[:5]) + more)
    if multi:
        scan.notes.append(f"the first frame is used of {len(multi)} multi-frame file(s): " + ", ".join(multi[:5])
                          + (" ..." if len(multi) > 5 else ""))
    not_used = getattr(dataset, "not_used", [])
    if not_used:
        listed = ", ".join(f"{name} ({why})" for name, why in not_used[:8])
        scan.notes.append(f"{len(not_used)} file(s) in {dataset.root} not used: {listed}"
                          + (" ..." if len(not_used) > 8 else ""))
    return scan


def _require(path: Path, exists, what: str, hint: str) -> Path:
    if not exists(Path(path)):
        msg = f"{path}: {what} not found"
        if hint:
            msg += f"; expected {hint}"
        raise DatasetError(msg)
    return Path(path)


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    return _require(path, Path.is_dir, what, hint)


def require_file(path: Path, what: str, hint: str = "") -> Path:
    return _require(path, Path.is_file, what, hint)

"""A directory of the user's own images (and the shipped demo set)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..vocab import Vocabulary, parse_class_lines
from .base import Dataset, require_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def readable_suffixes() -> frozenset[str]:
    """File name endings of every format PIL can open here (``.gif``, ``.ppm``, ``.jp2``, ... beside ours)."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def split_image_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files of ``folder`` that are images (by a name ending PIL opens), and every other entry with the
    reason it is not used (hidden files and sub-folders too: nothing is left out without a word)."""
    suffixes = readable_suffixes()
    used, not_used = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            not_used.append((p.name, "hidden"))
        elif p.is_dir():
            not_used.append((p.name, "a folder (images are read from the top level only)"))
        elif p.suffix.lower() not in suffixes:
            not_used.append((p.name, "not an image format PIL reads"))
        else:
            used.append(p)
    return used, not_used


class Folder(Dataset):
    """Images in ``images/``; optional ground truth ``annotations/<stem>.png`` (0 = background,
    1..K = the classes in the given order, 255 = ignore)."""

    name = "folder"
    exif_by_default = True  # the user's own photos: as people see them

    @classmethod
    def from_config(cls, cfg: dict) -> "Folder":
        from ..errors import ConfigError
        from ..vocab import vocabulary_from_spec

        if not cfg.get("images"):
            raise ConfigError("dataset=folder needs 'images' (a directory of images)")
        return cls(Path(cfg["images"]), vocabulary_from_spec(cfg.get("classes")), cfg.get("annotations"))

    def __init__(self, images: Path, vocabulary: Vocabulary, annotations: Path | None = None):
        super().__init__(Path(images), vocabulary)
        require_dir(self.root, "image folder", "a directory of images (config key 'images')")
        self.annotations = Path(annotations) if annotations else None
        if self.annotations is not None:
            require_dir(self.annotations, "annotation folder", "label PNGs named like the images")
        self._paths = {}
        files, self.not_used = split_image_files(self.root)
        for p in files:
            if p.stem in self._paths:
                raise DatasetError(f"{p}: two images share the name {p.stem!r} ({self._paths[p.stem].name}); "
                                   f"rename one of them")
            self._paths[p.stem] = p
        if not self._paths:
            raise DatasetError(f"{self.root}: no images found (any format PIL reads: "
                               f"{', '.join(IMAGE_SUFFIXES)}, .gif, ...)")

    def image_ids(self) -> list[str]:
        return list(self._paths)

    def image_path(self, image_id: str) -> Path:
        try:
            return self._paths[image_id]
        except KeyError:
            raise DatasetError(f"{self.root}: no image named {image_id!r}") from None

    @property
    def has_ground_truth(self) -> bool:
        return self.annotations is not None

    def annotation_path(self, image_id: str) -> Path:
        if self.annotations is None:
            raise DatasetError(f"{self.root}: no annotation folder given (config key 'annotations')")
        return self.annotations / f"{image_id}.png"

    def ground_truth(self, image_id: str, protocol: str) -> np.ndarray:
        gt = self._read_annotation(image_id)
        bad = (gt != 255) & ((gt < 0) | (gt > max(self.vocabulary.ids)))
        if bad.any():
            raise DatasetError(
                f"{self.annotation_path(image_id)}: label values {sorted(set(gt[bad].tolist()))[:5]} are not "
                f"0 (background), 1..{max(self.vocabulary.ids)} (the classes) or 255 (ignore)"
            )
        return gt


def demo_root() -> Path:
    return Path(str(resources.files("pnp_ovss") / "data" / "demo"))


class Demo(Folder):
    """The synthetic demo set shipped in the package (masks exact by construction)."""

    name = "demo"

    @classmethod
    def from_config(cls, cfg: dict) -> "Demo":
        return cls()

    def __init__(self):
        root = demo_root()
        vocab = parse_class_lines((root / "classes.txt").read_text(encoding="utf-8"), str(root / "classes.txt"))
        super().__init__(root / "images", vocab, root / "annotations")


class Files(Folder):
    """An explicit list of image files (``pnp-ovss segment``); ids are the file stems."""

    name = "folder"

    def __init__(self, paths: list[Path], vocabulary: Vocabulary):
        Dataset.__init__(self, Path("."), vocabulary)
        self.annotations = None
        self.not_used = []
        self._paths = {}
        for p in map(Path, paths):
            if not p.is_file():
                raise DatasetError(f"{p}: image not found")
            if p.stem in self._paths:
                raise DatasetError(f"{p}: another image is also named {p.stem!r}; names must be unique")
            self._paths[p.stem] = p
        if not self._paths:
            raise DatasetError("no images given")

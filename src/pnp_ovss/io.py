"""File helpers: atomic writes, image reading with clear errors, palette PNGs."""

from __future__ import annotations

import csv
import io as _stdio
import json
import os
import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DatasetError


def atomic_write_bytes(path: str | os.PathLike, data: bytes, before_rename=None) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one;
    ``before_rename(tmp_path)`` runs on the finished temporary file just before it is renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def publish(src: str | os.PathLike, dst: str | os.PathLike, existing: str = "replace") -> Path:
    """Move a finished file or folder ``src`` to ``dst`` with one rename (copy + rename across file systems),
    so that ``dst`` is either absent or whole. What happens to a ``dst`` already there:

    * ``replace``: it is removed first (a shard's store that is rebuilt);
    * ``keep``: it stays and ``src`` is discarded (a per-image entry another writer finished first: entries
      are never rewritten);
    * ``refuse``: an empty folder is replaced, anything else is a ``FileExistsError``.
    """
    import errno
    import shutil

    src, dst = Path(src), Path(dst)
    if existing not in ("replace", "keep", "refuse"):
        raise ValueError(f"publish: unknown existing={existing!r}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if existing == "keep":
            _remove(src)
            return dst
        if existing == "refuse" and not (dst.is_dir() and not any(dst.iterdir())):
            raise FileExistsError(f"{dst}: output exists and is not empty")
        _remove(dst)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            if existing == "keep" and dst.exists():  # another writer renamed its copy in between
                _remove(src)
                return dst
            raise
        tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"
        _remove(tmp)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp)
        os.replace(tmp, dst)
        _remove(src)
    return dst


def read_json(path: str | os.PathLike):
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None


@dataclass(frozen=True)
class ImageReading:
    """How an image file becomes the 8-bit RGB picture every stage sees (one reader for all of them).

    ``exif_orientation``: turn the pixels as the file's EXIF Orientation tag says (how people see the photo;
    the default for ``dataset: folder`` and ``pnp-ovss segment``), or keep them as stored (the benchmarks:
    their annotations are aligned to the stored pixels). ``max_pixels``: the largest image processed at its
    own resolution (0 = no limit); a larger one is refused (``oversize: refuse``) or processed at a capped
    resolution, its mask resized back (``oversize: downscale``)."""

    exif_orientation: bool = False
    max_pixels: int = 0
    oversize: str = "refuse"


#: the pixels as stored, no size limit (the released reading)
STORED = ImageReading()

#: EXIF orientations that swap width and height (5..8: transposed, rotated 90 or 270 degrees)
_SWAPPING = (5, 6, 7, 8)
#: 8-bit modes that PIL converts to RGB without losing range
_EIGHT_BIT = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says (read without decoding the pixels)."""

    width: int
    height: int
    mode: str
    format: str
    frames: int = 1
    orientation: int = 1

    def displayed(self, reading: ImageReading) -> tuple[int, int]:
        """(H, W) after the reading's orientation, before any size cap."""
        if reading.exif_orientation and self.orientation in _SWAPPING:
            return self.width, self.height
        return self.height, self.width

    def working(self, reading: ImageReading) -> tuple[int, int]:
        """(H, W) the stages compute at: the displayed size, capped to ``max_pixels`` when downscaling."""
        h, w = self.displayed(reading)
        if reading.max_pixels and h * w > reading.max_pixels and reading.oversize == "downscale":
            return capped_size(h, w, reading.max_pixels)
        return h, w


def capped_size(h: int, w: int, max_pixels: int) -> tuple[int, int]:
    """The largest (H, W) of the same aspect ratio with at most ``max_pixels`` pixels."""
    scale = (max_pixels / float(h * w)) ** 0.5
    nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
    while nh * nw > max_pixels:
        nh, nw = (nh - 1, nw) if nh >= nw else (nh, nw - 1)
    return nh, nw


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels as stored
        return 1
    return value if 1 <= value <= 8 else 1


def read_header(path: str | os.PathLike) -> ImageHeader:
    """The header of an image file; a missing file, or one PIL cannot open, is a DatasetError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return ImageHeader(int(im.width), int(im.height), str(im.mode), str(im.format or ""),
                               int(getattr(im, "n_frames", 1) or 1), _orientation(im))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: not an image this tool can read ({exc}); convert it to PNG or JPEG") from None


def reading_tag(header: ImageHeader, reading: ImageReading) -> str | None:
    """What the reader does to this file beyond the released ``convert("RGB")`` of the stored pixels (an
    orientation turn, a bit-depth scaling, a size cap), or None when it does nothing else. It enters the
    image's keys only when not None, so an ordinary image keeps its keys."""
    parts = []
    if reading.exif_orientation and header.orientation != 1:
        parts.append(f"exif-orientation={header.orientation}")
    if header.mode not in _EIGHT_BIT:
        parts.append(f"scaled-from={header.mode}")
    h, w = header.displayed(reading)
    if header.working(reading) != (h, w):
        parts.append("capped={}x{}".format(*header.working(reading)[::-1]))
    return ",".join(parts) or None


def oversize_problem(path, header: ImageHeader, reading: ImageReading) -> str | None:
    """Why an image is refused for its size (``oversize: refuse``), or None."""
    h, w = header.displayed(reading)
    if reading.max_pixels and h * w > reading.max_pixels and reading.oversize != "downscale":
        return (f"{path}: image is {w}x{h} ({h * w / 1e6:.1f} MP), above reading.max_pixels "
                f"{reading.max_pixels} ({reading.max_pixels / 1e6:.1f} MP); raise reading.max_pixels if the "
                f"machine has the memory, or set reading.oversize: downscale to process it at "
                f"{reading.max_pixels / 1e6:.1f} MP with the mask resized back")
    return None


def to_rgb8(im: Image.Image) -> np.ndarray:
    """An image of any PIL mode as uint8 RGB [H, W, 3]; high bit depths are scaled by their type's range
    (16-bit: 0..65535; ``I``: 0..65535 when its values fit, else 0..2^32-1; ``F``: 0..1, or 0..255 /
    0..65535 when the values are larger), never clipped."""
    if im.mode in _EIGHT_BIT:
        return np.asarray(im.convert("RGB"))
    a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., :3]
    a = a.astype(np.float64)
    if im.mode.startswith("I;16"):
        top = 65535.0
    elif im.mode.startswith("I"):
        top = 65535.0 if a.min(initial=0) >= 0 and a.max(initial=0) <= 65535 else 4294967295.0
        if top > 65535:
            a = a - np.iinfo(np.int32).min if a.min(initial=0) < 0 else a
    elif im.mode.startswith("F"):
        peak = float(np.nanmax(a)) if a.size else 0.0
        top = next(t for t in (1.0, 255.0, 65535.0, max(peak, 1.0)) if peak <= t)
        a = np.nan_to_num(a - min(0.0, float(np.nanmin(a)) if a.size else 0.0))
    else:
        return np.asarray(im.convert("RGB"))
    grey = np.rint(np.clip(a / top, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2) if grey.ndim == 2 else grey


def read_image(path: str | os.PathLike, reading: ImageReading = STORED) -> np.ndarray:
    """An image as every stage sees it, uint8 RGB [H, W, 3]: the first frame, turned by its EXIF orientation
    when the reading says so, high bit depths scaled to 8 bits, capped to ``max_pixels`` when downscaling.
    A missing, unreadable or truncated file is a DatasetError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            if reading.exif_orientation:
                im = ImageOps.exif_transpose(im)
            rgb = to_rgb8(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable or truncated image ({exc}); replace the file, or use "
                           f"on_error: skip to go on without it") from None
    h, w = rgb.shape[:2]
    if reading.max_pixels and h * w > reading.max_pixels:
        if reading.oversize != "downscale":
            raise DatasetError(oversize_problem(path, ImageHeader(w, h, "RGB", ""), ImageReading(False,
                               reading.max_pixels, reading.oversize)))
        nh, nw = capped_size(h, w, reading.max_pixels)
        rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BICUBIC))
    return rgb


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map resized to (H, W) by nearest neighbour (a capped image's mask back to the photo's size)."""
    if tuple(labels.shape[:2]) == tuple(size):
        return labels
    im = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="L").resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(im)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG (palette or greyscale) as its raw index values, int64 [H, W]."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: annotation not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L", "I", "I;16", "1"):
                raise DatasetError(
                    f"{path}: annotation has image mode {im.mode}; expected a palette or greyscale label PNG"
                )
            return np.asarray(im).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable or truncated annotation ({exc})") from None


def image_size(path: str | os.PathLike, reading: ImageReading = STORED) -> tuple[int, int]:
    """(H, W) of an image file as :func:`read_image` gives it before any cap, from its header."""
    return read_header(path).displayed(reading)


def default_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), [n, 3] uint8; index 0 is black."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def label_png_bytes(labels: np.ndarray, palette: np.ndarray | None = None, greyscale: bool = False) -> bytes:
    """A label map (values 0..255) encoded as PNG: indexed with ``palette`` (default: the VOC colours), or
    8-bit greyscale (``greyscale``, the mmseg train-id files)."""
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("label values must be in 0..255 for a label PNG")
    im = Image.fromarray(labels.astype(np.uint8), mode="L" if greyscale else "P")
    if not greyscale:
        pal = default_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
        im.putpalette(pal.reshape(-1).tolist())
    buf = _stdio.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_label_png(path: str | os.PathLike, labels: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write a label map as an indexed-palette PNG (values must fit in 0..255), atomically."""
    atomic_write_bytes(path, label_png_bytes(labels, palette))


SKIPPED_COLUMNS = ("image_id", "stage", "reason")


def skipped_csv_text(rows: Iterable[dict]) -> str:
    """CSV text with the header ``image_id,stage,reason`` and one row per skipped image."""
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SKIPPED_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in SKIPPED_COLUMNS})
    return buf.getvalue()

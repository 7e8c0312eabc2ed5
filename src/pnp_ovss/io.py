"""File helpers: atomic writes, image reading with clear errors, palette PNGs."""

from __future__ import annotations

import csv
import io as _stdio
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
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


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 RGB [H, W, 3]; a missing, unreadable or truncated file is a DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{path}: unreadable or truncated image ({exc})") from None


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as a PIL RGB image with the same error handling as :func:`read_rgb`."""
    return Image.fromarray(read_rgb(path))


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


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file without decoding it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None
    return h, w


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

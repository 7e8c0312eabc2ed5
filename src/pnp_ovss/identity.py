"""Image identity: file content digests and the per-image key of every stage.

The unit of work is the image (docs/ARCHITECTURE.md "Identifiers"). An image's result at a stage is identified by a key built from
what it depends on, and by nothing else:

- labels:   the labels parameters, the vocabulary, the image id and the image's bytes (plus the annotation's
            bytes for the ground-truth oracle, the answers file's bytes for ``gpt4o_file``);
- gradcam:  the GradCAM parameters and the labels key of the image; in faithful mode (the patch ranking
            depends on the batch, ALGORITHM.md §5, §10.4) the labels keys of every image of its batch, in order;
- refine:   the refine parameters and the GradCAM key (plus the CRF image's bytes where it is another file);
- evaluate: the evaluation parameters, the refine key and the annotation's bytes.

Shards, ``limit``, ``shard_size`` and ``data_root`` are in no key: they only decide which images exist and how
jobs are cut. Digests are remembered by (path, size, mtime) so a rerun reads only new or changed files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .io import ImageHeader, atomic_write_json, read_header
from .ordering import batches_of

MISSING = "missing"
DIGEST_CACHE_NAME = ".digests.json"
HEADER_CACHE_NAME = ".headers.json"


def short_hash(obj) -> str:
    """A stage folder's hash: a stable 10-hex-digit hash of its JSON-serialisable parameters (key order
    irrelevant; which parameters enter it: :mod:`pnp_ovss.parameters`)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:10]


def key_of(*parts) -> str:
    """A 20-hex-digit key of JSON-serialisable parts (order matters, dict key order does not)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def sha256_of_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class _StatMemo:
    """Values computed from files, remembered by (absolute path, size, mtime_ns) in a JSON file; a damaged
    or read-only memo only costs recomputing them."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list] = {}
        self.dirty = False
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    self.entries = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3}
            except (OSError, ValueError):
                self.entries = {}

    def remembered(self, p: Path, st: os.stat_result):
        entry = self.entries.get(str(p.resolve()))
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return entry[2]
        return None

    def remember(self, p: Path, st: os.stat_result, value) -> None:
        self.entries[str(p.resolve())] = [st.st_size, st.st_mtime_ns, value]
        self.dirty = True

    def save(self) -> None:
        if self.dirty and self.path is not None:
            try:
                atomic_write_json(self.path, self.entries)
            except OSError:
                pass  # a read-only results folder: recomputed next time
            self.dirty = False


class DigestCache(_StatMemo):
    """sha256 of files, remembered by (absolute path, size, mtime_ns) in a JSON file.

    A file that does not exist has the digest ``"missing"`` (the stage that reads it reports the error).
    """

    def digest(self, path: str | os.PathLike | None) -> str:
        if path is None:
            return MISSING
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            return MISSING
        if not p.is_file():
            return MISSING
        known = self.remembered(p, st)
        if known is not None:
            return str(known)
        try:
            value = sha256_of_file(p)
        except OSError:
            return MISSING
        self.remember(p, st, value)
        return value


class HeaderCache(_StatMemo):
    """Image headers (:class:`pnp_ovss.io.ImageHeader`), remembered by (absolute path, size, mtime_ns), so a
    rerun's parse opens only new or changed images."""

    def header(self, path: str | os.PathLike):
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            return read_header(p)  # the DatasetError naming the file
        known = self.remembered(p, st)
        if isinstance(known, dict):
            try:
                return ImageHeader(**known)
            except TypeError:
                pass
        header = read_header(p)
        self.remember(p, st, dict(header.__dict__))
        return header


def annotation_files(dataset, image_id: str, protocol: str) -> list[Path]:
    """The files an image's ground truth is read from under ``protocol`` (empty without ground truth)."""
    if not getattr(dataset, "has_ground_truth", False):
        return []
    try:
        try:
            path = dataset.annotation_path(image_id, protocol)  # COCO: another file per protocol
        except TypeError:
            path = dataset.annotation_path(image_id)
    except Exception:  # noqa: BLE001 - no annotation for this image: the evaluation reports it
        return []
    return [Path(path)] if path is not None else []


def files_digest(digests: DigestCache, paths: list[Path]) -> str:
    return key_of(*[digests.digest(p) for p in paths]) if paths else MISSING


def gradcam_keys(
    stage_hash: str, shards: dict[str, list[str]], labels_keys: dict[str, str], batch_size: int, batch_dependent: bool
) -> dict[str, str]:
    """Per image: the GradCAM key. Batch-dependent (faithful) keys cover the labels keys of the whole batch."""
    out = {}
    for ids in shards.values():
        for batch in batches_of(ids, batch_size):
            if batch_dependent:
                batch_key = key_of("gradcam-batch", stage_hash, [(i, labels_keys[i]) for i in batch])
                out.update({i: key_of(batch_key, i) for i in batch})
            else:
                out.update({i: key_of("gradcam", stage_hash, labels_keys[i]) for i in batch})
    return out


def job_name(shard: str, *parts) -> str:
    """A shard job's name: the shard and a key of what the job's images are (``shard-0003-<16 hex>``)."""
    return f"{shard}-{key_of(*parts)[:16]}"


def set_name(*parts) -> str:
    """The name of a whole image set's result folder (``set-<16 hex>``)."""
    return f"set-{key_of(*parts)[:16]}"

"""Per-image results of each stage, stored under the stage folder by the image's key (see identity.py).

``<stage>/<hash>/images/<key>.json|.zarr|.png`` is one image's labels record, GradCAM store or label map;
``<key>.skipped.json`` records an image that a stage skipped (``on_error: skip``) and why. Every entry is
written whole and then renamed into place, so an entry that exists is complete; nothing is ever rewritten.
A result is reused by every run whose key for that image is the same, whatever the shards, the limit or
the sweep.

Every entry is sealed when written: ``.<entry>.seal`` beside it records each of its files' size, mtime and sha256 and
the digest of the upstream entry it was made from. An entry is reused only when its files still match its
seal (a changed size or mtime is re-hashed, so a copied results folder stays valid) and its upstream is
still the one it was made from; otherwise the parse moves it to ``<stage folder>/damaged/`` with a warning
naming the image and the file, and it is recomputed (:func:`check_entry`, :func:`set_aside`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .identity import key_of, sha256_of_file
from .io import atomic_write_bytes, atomic_write_json, publish, read_json


IMAGES = "images"
SUFFIX = {"labels": ".json", "gradcam": ".zarr", "refine": ".png", "search": ".zarr"}
SKIPPED = ".skipped.json"
SEAL = ".seal"
DAMAGED = "damaged"


def entries_dir(stage_dir: str | os.PathLike) -> Path:
    return Path(stage_dir) / IMAGES


def entry_path(stage_dir: str | os.PathLike, stage: str, key: str) -> Path:
    return entries_dir(stage_dir) / f"{key}{SUFFIX[stage]}"


def skip_path(stage_dir: str | os.PathLike, key: str) -> Path:
    return entries_dir(stage_dir) / f"{key}{SKIPPED}"


def names_in(folder: str | os.PathLike) -> set[str]:
    """The names in a folder (none when it does not exist): one directory read instead of a stat per file."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def listing(stage_dir: str | os.PathLike) -> set[str]:
    """Names in the stage's entry folder."""
    return names_in(entries_dir(stage_dir))


def is_done(names: set[str], stage: str, key: str, on_error: str) -> bool:
    """Whether an image needs no work at a stage: its result exists, or (``on_error: skip``) it was skipped."""
    if f"{key}{SUFFIX[stage]}" in names:
        return True
    return on_error == "skip" and f"{key}{SKIPPED}" in names


def write_skip(stage_dir, key: str, image_id: str, stage: str, reason: str) -> None:
    atomic_write_json(skip_path(stage_dir, key), {"image_id": image_id, "stage": stage, "reason": reason})


def read_skip(stage_dir, key: str) -> dict | None:
    path = skip_path(stage_dir, key)
    if not path.is_file():
        return None
    return read_json(path)


# --- seals: what an entry must be, recorded when it is written ------------------------------------------


def seal_path(entry: str | os.PathLike) -> Path:
    """``<folder>/.<name>.seal``: hidden beside the entry (or view), so that listings of results show results."""
    entry = Path(entry)
    return entry.parent / f".{entry.name}{SEAL}"


def _files_of(entry: Path) -> list[tuple[str, Path]]:
    """An entry's files by name relative to it (``""`` for a plain file), sorted."""
    if entry.is_dir():  # Snakemake's own marker in a directory() output is not part of it
        return sorted((p.relative_to(entry).as_posix(), p) for p in entry.rglob("*")
                      if p.is_file() and p.name != ".snakemake_timestamp")
    return [("", entry)]


def file_facts(entry: str | os.PathLike) -> dict[str, list]:
    """``{name: [size, mtime_ns, sha256]}`` of every file of an entry (a file, or a folder such as a store)."""
    facts = {}
    for name, path in _files_of(Path(entry)):
        st = path.stat()
        facts[name] = [st.st_size, st.st_mtime_ns, sha256_of_file(path)]
    return facts


def digest_of_facts(facts: dict[str, list]) -> str:
    return key_of(sorted((name, f[2]) for name, f in facts.items()))


def seal(written: str | os.PathLike, final: str | os.PathLike, upstream: str | None = None) -> str:
    """Record what the entry ``written`` (still at its temporary path, or already at ``final``) is, in
    ``final``'s seal, before it is renamed into place; returns its digest."""
    facts = file_facts(written)
    atomic_write_json(seal_path(final), {"files": facts, "upstream": upstream})
    return digest_of_facts(facts)


def write_sealed_bytes(path: str | os.PathLike, data: bytes, upstream: str | None = None) -> str:
    """Write one file entry atomically with its seal (the seal first: an entry that exists has one)."""
    digests = []
    atomic_write_bytes(path, data, before_rename=lambda tmp: digests.append(seal(tmp, path, upstream)))
    return digests[0]


def _decodes(stage: str, entry: Path) -> str | None:
    """Why an unsealed entry (written before seals existed) is unusable, or None: a full read of it."""
    try:
        if entry.suffix == ".json":
            read_json(entry)
        elif entry.suffix == ".png":
            from .io import read_label_png

            read_label_png(entry)
        elif entry.suffix == ".npz":
            import numpy as np

            with np.load(entry) as z:
                for name in z.files:
                    z[name]
        else:
            from .store import completed_ids, open_store, read_image_maps

            group = open_store(entry)
            for image_id in completed_ids(entry):
                read_image_maps(group, image_id)
    except Exception as exc:  # noqa: BLE001 - any failure to read it makes it unusable
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def check_view(view: str | os.PathLike, key: str) -> str | None:
    """Why a view (``latest/``, ``miou.csv``, a ``set-*`` folder, ...) cannot be kept as it is, or None: it
    must exist, have been sealed for ``key`` (what the current config shows) and still match its seal."""
    view = Path(view)
    if not view.exists():
        return "missing"
    try:
        record = read_json(seal_path(view))
    except Exception:  # noqa: BLE001 - not sealed: built by an older version, or by hand
        return "not sealed"
    if record.get("upstream") != key:
        return "built for another configuration"
    problem, _ = check_entry("view", view)
    return problem


#: the arrays of an evaluation job's result (``evaluate/<hash>/shards/<job>.npz``); one written before an array
#: existed (the boundary counts came with Boundary IoU) is recounted
SHARD_ARRAYS = ("hist", "boundary_intersection", "boundary_union", "n_images", "skipped_ids", "skipped_reasons")


def _lacks_arrays(entry: Path) -> str | None:
    """Why an evaluation job's result cannot be reused as it is: an array it lacks (made by an earlier version)."""
    import numpy as np

    try:
        with np.load(entry) as z:
            missing = [a for a in SHARD_ARRAYS if a not in z.files]
    except Exception as exc:  # noqa: BLE001 - an unreadable file is not reusable
        return f"unreadable ({type(exc).__name__}: {exc})"
    return f"it was made before {', '.join(missing)} were counted" if missing else None


def check_entry(stage: str, entry: str | os.PathLike, upstream: str | None = None) -> tuple[str | None, str | None]:
    """``(problem, digest)`` of an entry: problem None when it may be reused. Its files must match its seal
    (size and sha256; a file whose mtime alone changed is re-hashed) and, when ``upstream`` is given, it must
    have been made from that upstream digest. An entry without a seal (older results) is read whole once and
    sealed when it reads."""
    entry = Path(entry)
    if not entry.exists():
        return "missing", None
    try:
        record = read_json(seal_path(entry))
        recorded = record["files"]
    except Exception:  # noqa: BLE001 - no seal, or an unreadable one: read the entry itself
        problem = _decodes(stage, entry) or (_lacks_arrays(entry) if stage == "evaluate" else None)
        if problem:
            return problem, None
        try:
            return None, seal(entry, entry, upstream)
        except OSError:  # a read-only results folder
            return None, digest_of_facts(file_facts(entry))
    current = {name: path for name, path in _files_of(entry)}
    if set(current) != set(recorded):
        lost = sorted(set(recorded) - set(current))[:3]
        extra = sorted(set(current) - set(recorded))[:3]
        return f"its files differ from when it was written (missing {lost or 'none'}, added {extra or 'none'})", None
    for name, path in current.items():
        size, mtime, sha = recorded[name]
        st = path.stat()
        if st.st_size != size:
            return f"{name or 'the file'} is {st.st_size} bytes, {size} when written (damaged or edited)", None
        if st.st_mtime_ns != mtime and sha256_of_file(path) != sha:
            return f"{name or 'the file'} changed since it was written (damaged or edited)", None
    if upstream is not None and record.get("upstream") not in (None, upstream):
        return "it was made from an earlier result of the stage above, which has been recomputed", None
    if stage == "evaluate" and (problem := _lacks_arrays(entry)):
        return problem, None
    return None, digest_of_facts(recorded)


def verified_digest(stage: str, entry: str | os.PathLike, image_id: str) -> str:
    """The digest of an entry a job is about to reuse, or a DatasetError naming the image, the file and what
    to do (the parse sets such an entry aside; this catches one damaged since)."""
    from .errors import DatasetError

    problem, digest = check_entry(stage, entry)
    if problem is not None:
        raise DatasetError(f"image {image_id}: {entry} cannot be reused: {problem}; run the workflow again: "
                           f"the parse sets it aside and recomputes it")
    return digest


def outdated(stage: str, entry: Path, upstream_stage: str, upstream_entry: Path, log=None) -> bool:
    """In a job: whether an existing entry was made from another version of its upstream entry (recomputed
    since, e.g. earlier in this run) or no longer matches its seal; if so it is set aside, to be recomputed."""
    if not entry.exists() or not upstream_entry.exists():
        return False
    _, upstream = check_entry(upstream_stage, upstream_entry)
    problem, _ = check_entry(stage, entry, upstream)
    if problem is None:
        return False
    set_aside(entry)
    if log is not None:
        log.warning("%s cannot be reused: %s; it is recomputed", entry, problem)
    return True


def set_aside(entry: str | os.PathLike) -> Path:
    """Move a damaged entry and its seal to ``<stage folder>/damaged/`` (kept for a look, out of the way)."""
    import shutil

    entry = Path(entry)
    folder = entry.parent.parent / DAMAGED
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.name
    for src, dst in ((entry, target), (seal_path(entry), seal_path(target))):
        if dst.exists() or dst.is_symlink():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        if src.exists():
            os.replace(src, dst)
    return target


def write_labels_entry(stage_dir, key: str, image_id: str, record: dict) -> None:
    import json

    text = json.dumps({"image_id": image_id, **record}, indent=1, sort_keys=False) + "\n"
    write_sealed_bytes(entry_path(stage_dir, "labels", key), text.encode("utf-8"))


def read_labels_entry(stage_dir, key: str) -> dict:
    return read_json(entry_path(stage_dir, "labels", key))


def write_gradcam_entry(stage_dir, key: str, item, stage: str = "gradcam", upstream: str | None = None) -> Path:
    """One image's GradCAM store (a Zarr group holding the image's group, as in the shard stores), sealed
    (``upstream``: the digest of the labels entry it was made from); the search's maps (``stage="search"``)
    are stored the same way."""
    from .store import write_store_folder

    final = entry_path(stage_dir, stage, key)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{key}.{os.getpid()}.tmp.zarr"
    shutil.rmtree(tmp, ignore_errors=True)
    write_store_folder(tmp, item)
    seal(tmp, final, upstream)
    publish(tmp, final, existing="keep")
    return final


def write_job_record(path, stage: str, shard: str, ids: list[str], computed: list[str], skipped: list[str]) -> None:
    """The record a shard job leaves for Snakemake: which images it covered, computed, reused and skipped."""
    atomic_write_json(
        path,
        {
            "stage": stage,
            "shard": shard,
            "images": len(ids),
            "computed": sorted(computed),
            "skipped": sorted(skipped),
            "reused": len(ids) - len(computed) - len(skipped),
        },
    )


def remove_other_sets(folder: str | os.PathLike, keep: str) -> list[str]:
    """Remove the ``set-*`` folders of ``folder`` other than ``keep`` (views of earlier image sets; the
    per-image results they showed stay in ``images/``). Returns the names removed."""
    removed = []
    for other in Path(folder).glob("set-*"):
        if other.is_dir() and other.name != keep:
            shutil.rmtree(other, ignore_errors=True)
            seal_path(other).unlink(missing_ok=True)
            removed.append(other.name)
    return removed

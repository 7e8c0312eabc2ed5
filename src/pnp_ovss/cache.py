"""Per-image results of each stage, stored under the stage folder by the image's key (see identity.py).

``<stage>/<hash>/images/<key>.json|.zarr|.png`` is one image's labels record, GradCAM store or label map;
``<key>.skipped.json`` records an image that a stage skipped (``on_error: skip``) and why. Every entry is
written whole and then renamed into place, so an entry that exists is complete; nothing is ever rewritten.
A result is reused by every run whose key for that image is the same, whatever the shards, the limit or
the sweep.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .io import atomic_write_json, publish, read_json
from .layout import STAGE_FOLDER  # noqa: F401 (stage -> its folder under results/<dataset>/; the rules' contract)

IMAGES = "images"
SUFFIX = {"labels": ".json", "gradcam": ".zarr", "refine": ".png", "search": ".zarr"}
SKIPPED = ".skipped.json"


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


def write_labels_entry(stage_dir, key: str, image_id: str, record: dict) -> None:
    atomic_write_json(entry_path(stage_dir, "labels", key), {"image_id": image_id, **record})


def read_labels_entry(stage_dir, key: str) -> dict:
    return read_json(entry_path(stage_dir, "labels", key))


def write_gradcam_entry(stage_dir, key: str, item, stage: str = "gradcam") -> Path:
    """One image's GradCAM store (a Zarr group holding the image's group, as in the shard stores); the
    search's maps (``stage="search"``) are stored the same way."""
    from .store import open_store, write_image_maps

    final = entry_path(stage_dir, stage, key)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{key}.{os.getpid()}.tmp.zarr"
    shutil.rmtree(tmp, ignore_errors=True)
    write_image_maps(open_store(tmp, create=True), item, complete=True)
    publish(tmp, final, existing="keep")
    return final


def write_manifest(path, stage: str, shard: str, ids: list[str], computed: list[str], skipped: list[str]) -> None:
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
            removed.append(other.name)
    return removed

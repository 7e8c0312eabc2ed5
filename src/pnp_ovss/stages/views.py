"""The views of a config at fixed paths: ``results/<dataset>/latest/`` (masks by image name),
``results/<dataset>/miou.csv`` (one row per run), ``results/last-run.yaml`` (the config, for the report),
and the ``runs.csv`` ledger.

A fixed path cannot say by its name which config it shows, so each view is sealed with a key of what it
shows (:func:`pnp_ovss.entries.check_view`): the parse compares the seals with the current config and with
the views' files, and the ``views`` rule rebuilds exactly the views that are missing, were built for another
configuration (a copied, moved or restored results folder; ``.snakemake/`` deleted) or were edited. The rule
ends by writing a stamp named by the state it made (``<results>/<dataset>/.views/<key>``), which is what
``snakemake`` is asked for, so the plan and the jobs always agree.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..entries import check_view, seal
from ..errors import DatasetError
from ..io import atomic_write_bytes, atomic_write_text, publish, skipped_csv_text
from ..layout import PARAMETERS_CSV, SKIPPED_CSV
from ..layout import VIEWS_DIR  # noqa: F401 (the stamps' folder)
from .evaluate import append_ledger, concat_csv_text



def write_sealed_text(path: str | os.PathLike, text: str, key: str) -> None:
    """A view file written atomically and sealed for ``key``."""
    atomic_write_bytes(path, text.encode("utf-8"), before_rename=lambda tmp: seal(tmp, path, key))


def write_stamps(folder: Path, names: list[str]) -> None:
    """The stamps ``names`` in ``folder``, every other stamp there removed (only the current state has one)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.name not in names and old.is_file():
            old.unlink(missing_ok=True)
    for name in names:
        (folder / name).write_text("views of this results folder are up to date for this state\n")


def publish_views(
    *,
    keys: dict[str, str],
    latest: Path,
    masks_views: dict[Path, str],
    parameters: dict[str, dict],
    tables: list[Path],
    miou: Path,
    ledger: Path,
    last_run: Path,
    last_run_text: str,
    stamps: list[Path],
    log=None,
) -> list[str]:
    """Rebuild the fixed-path views whose seal does not match ``keys`` (``latest``, ``miou``, ``last_run``),
    add the runs to the ledger, write the stamps. Returns what was rebuilt, each with why."""
    rebuilt = []

    def stale(name: str, path: Path) -> bool:
        problem = check_view(path, keys[name])
        if problem:
            rebuilt.append(f"{path} ({problem})")
        return problem is not None

    if stale("latest", latest):
        build_latest(masks_views, parameters, latest, keys["latest"])
    if tables:
        if stale("miou", miou):
            write_sealed_text(miou, concat_csv_text(tables), keys["miou"])
        added = append_ledger(tables, ledger)
        if log is not None:
            log.info("%d runs in %s; %d new rows in %s", len(tables), miou, added, ledger)
    if stale("last_run", last_run):
        write_sealed_text(last_run, last_run_text, keys["last_run"])
    for folder in {s.parent for s in stamps}:
        write_stamps(folder, [s.name for s in stamps if s.parent == folder])
    if log is not None:
        for line in rebuilt:
            log.info("rebuilt %s", line)
    return rebuilt


# --- the masks views: copies of the refine stage's label maps by image name ------------------------------


def write_masks(image_ids: list[str], keys: dict[str, str], masks_dir: str | os.PathLike,
                target: str | os.PathLike) -> list[dict]:
    """``target/<image_id>.png`` for every image with a label map in the refine stage folder ``masks_dir``
    (copies, each checked against its seal first: a damaged one is never copied; editing or deleting a copy
    never touches the cache) and ``target/skipped.csv`` listing the others (the stage that skipped each and
    why). Returns the skipped rows."""
    from ..entries import entry_path, read_skip, verified_digest

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    skipped = []
    for image_id in image_ids:
        src = entry_path(masks_dir, "refine", keys[image_id])
        if src.is_file():
            verified_digest("refine", src, image_id)
            shutil.copy2(src, target / f"{image_id}.png")
            continue
        record = read_skip(masks_dir, keys[image_id])
        if record is None:
            raise DatasetError(f"image {image_id}: no label map at {src}; run the refine stage first")
        skipped.append({"image_id": image_id, "stage": record["stage"], "reason": record["reason"]})
    atomic_write_text(target / SKIPPED_CSV, skipped_csv_text(skipped))
    return skipped


def build_masks_view(
    image_ids: list[str], keys: dict[str, str], masks_dir: str | os.PathLike, view_dir: str | os.PathLike
) -> tuple[int, list[dict]]:
    """``view_dir/<image_id>.png`` for every image of the run and ``view_dir/skipped.csv`` (:func:`write_masks`),
    built beside, sealed and renamed into place. Other views of the same refine folder (earlier image sets)
    are removed: the maps themselves stay."""
    from ..entries import remove_other_sets, seal

    view_dir = Path(view_dir)
    tmp = view_dir.parent / f".{view_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    skipped = write_masks(image_ids, keys, masks_dir, tmp)
    seal(tmp, view_dir, view_dir.name)
    publish(tmp, view_dir, existing="replace")
    remove_other_sets(view_dir.parent, view_dir.name)
    return len(image_ids) - len(skipped), skipped


def build_latest(views: dict[Path, str], parameters: dict[str, dict], out_dir: str | os.PathLike,
                 key: str | None = None) -> list[Path]:
    """``out_dir`` = the current runs' masks by image name, whatever the hashes: ``<out_dir>/<image>.png``
    for a single run, ``<out_dir>/<label>/<image>.png`` per run of a sweep (label = the swept values, e.g.
    ``threshold=0.1``); each folder also gets ``parameters.csv`` (the run's parameters) and the view's
    ``skipped.csv``. Files are copies (editing one never touches the cache). Built beside, sealed for
    ``key`` (what the config shows, :func:`pnp_ovss.entries.check_view`) and renamed into place."""
    from ..entries import seal
    from ..report import write_parameters_table

    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    folders = []
    for view, label in views.items():
        target = tmp / label if label else tmp
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted(Path(view).iterdir()):
            if src.suffix in (".png", ".csv"):
                shutil.copy2(src, target / src.name)
        write_parameters_table(parameters[label], target / PARAMETERS_CSV)
        folders.append(out_dir / label if label else out_dir)
    if key is not None:
        seal(tmp, out_dir, key)
    publish(tmp, out_dir, existing="replace")
    return folders

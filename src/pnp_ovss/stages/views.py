"""The views of a config at fixed paths: ``results/<dataset>/latest/`` (masks by image name),
``results/<dataset>/miou.csv`` (one row per run), ``results/last-run.yaml`` (the config, for the report),
and the ``runs.csv`` ledger.

A fixed path cannot say by its name which config it shows, so each view is sealed with a key of what it
shows (:func:`pnp_ovss.cache.check_view`): the parse compares the seals with the current config and with
the views' files, and the ``views`` rule rebuilds exactly the views that are missing, were built for another
configuration (a copied, moved or restored results folder; ``.snakemake/`` deleted) or were edited. The rule
ends by writing a stamp named by the state it made (``<results>/<dataset>/.views/<key>``), which is what
``snakemake`` is asked for, so the plan and the jobs always agree.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cache import check_view, seal
from ..io import atomic_write_bytes
from ..layout import VIEWS_DIR  # noqa: F401 (the stamps' folder)
from .evaluate import append_ledger, concat_csv_text
from .refine import build_latest



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

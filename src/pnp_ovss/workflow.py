"""Glue between Snakemake and the package: the parse-time plan and the rule scripts' context.

Everything here is plain Python (no Snakemake import), so it is testable and the rule scripts stay thin.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import Run, flat_run_parameters, normalise, plan_runs, resolved_label_source
from .datasets import Dataset, get_dataset
from .io import atomic_write_text
from .ordering import faithful_order, make_shards, shard_name


@dataclass
class Plan:
    """What the workflow does for a config: image order, shards, runs and stage parameter table."""

    cfg: dict
    dataset: Dataset
    image_ids: list[str]
    shards: dict[str, list[str]]
    runs: list[Run]
    table: dict[str, dict]
    out: str = field(default="")

    @property
    def evaluates(self) -> bool:
        return self.dataset.has_ground_truth

    def shard_ids(self, shard: str) -> list[str]:
        return self.shards[shard]

    def upstream(self, stage_hash: str) -> str:
        return self.table[stage_hash]["upstream"]

    def run_of(self, evaluate_hash: str) -> Run:
        for run in self.runs:
            if run.evaluate == evaluate_hash:
                return run
        raise KeyError(evaluate_hash)

    def run_parameters(self, evaluate_hash: str) -> dict:
        return flat_run_parameters(self.table, self.run_of(evaluate_hash))


def ordered_ids(cfg: dict, dataset: Dataset) -> list[str]:
    """The split in the released order (faithful: randperm seed 0) or the base order (clean), limited."""
    ids = dataset.image_ids()
    if cfg["mode"] == "faithful":
        ids = faithful_order(ids)
    if cfg["limit"]:
        ids = ids[: cfg["limit"]]
    return ids


def plan_warnings(cfg: dict) -> list[str]:
    """Settings that run but do not do what the mode promises."""
    warnings = []
    batch = cfg["gradcam"]["batch_size"]
    if cfg["mode"] == "faithful" and cfg["shard_size"] % batch:
        warnings.append(
            f"shard_size {cfg['shard_size']} is not a multiple of gradcam.batch_size {batch}: in faithful mode "
            "the last batch of each shard is smaller than the released code's, which changes its patch ranking "
            "(ALGORITHM.md §10.4)"
        )
    return warnings


def make_plan(raw_config: dict) -> Plan:
    cfg = normalise(raw_config)
    dataset = get_dataset(cfg)
    ids = ordered_ids(cfg, dataset)
    shards = {shard_name(i): s for i, s in enumerate(make_shards(ids, cfg["shard_size"]))}
    runs, table = plan_runs(cfg)
    out = str(Path(cfg["results"]) / cfg["dataset"])
    return Plan(cfg, dataset, ids, shards, runs, table, out)


def stage_logger(log_path: str | None, name: str) -> logging.Logger:
    """A logger whose records (and those of every pnp_ovss module) go to the rule's log file."""
    pkg = logging.getLogger("pnp_ovss")
    pkg.setLevel(logging.INFO)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_path)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        pkg.addHandler(fh)  # the stage's logger and every package module's propagate here
        _log_uncaught_errors(logging.getLogger(f"pnp_ovss.{name}"))
    return logging.getLogger(f"pnp_ovss.{name}")


def _log_uncaught_errors(logger: logging.Logger) -> None:
    """Write the error that ends a rule script into its log file too (it also reaches Snakemake's stderr)."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        logger.error("%s: %s", kind.__name__, value)
        previous(kind, value, tb)

    sys.excepthook = hook


def write_params_yaml(folder: str | Path, params: dict) -> None:
    """The human-readable parameters of a stage folder (``<stage>/<hash>/params.yaml``)."""
    path = Path(folder) / "params.yaml"
    text = yaml.safe_dump(params, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


__all__ = ["Plan", "make_plan", "ordered_ids", "stage_logger", "write_params_yaml", "resolved_label_source"]

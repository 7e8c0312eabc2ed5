"""Rule miou_table: one row per run of this config (miou.csv) and the ledger of every run ever evaluated
(runs.csv, rows only added)."""
from pathlib import Path

from pnp_ovss.stages.evaluate import append_ledger, concat_csv
from pnp_ovss.layout import RUNS_CSV
from pnp_ovss.workflow import stage_logger

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "evaluate")
tables = [Path(p) for p in sm.input]
concat_csv(tables, Path(sm.output[0]))
ledger = Path(sm.output[0]).parent / RUNS_CSV
added = append_ledger(tables, ledger)
log.info("%d runs in %s; %d new rows in %s", len(tables), sm.output[0], added, ledger)

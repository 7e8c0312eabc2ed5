"""Rule miou_table: one row per run (sweep combination)."""
from pathlib import Path

from pnp_ovss.evaluate import concat_csv

sm = snakemake  # noqa: F821 (injected by Snakemake)
concat_csv([Path(p) for p in sm.input], Path(sm.output[0]))

"""Rule views: latest/, miou.csv, last-run.yaml and runs.csv for the current config (logic in pnp_ovss.stages.views)."""
from pathlib import Path

from pnp_ovss.layout import RUNS_CSV
from pnp_ovss.stages.job import JobContext
from pnp_ovss.stages.views import publish_views
from pnp_ovss.summary import last_run_text

job = JobContext.from_snakemake(snakemake, "views")  # noqa: F821 (injected by Snakemake)
sm = job.snakemake
paths = {k: Path(v) for k, v in sm.params.paths.items()}
out = paths["latest"].parent
publish_views(
    keys=dict(sm.params.view_keys),
    latest=paths["latest"],
    masks_views={Path(view): label for view, label in sm.params.runs.items()},
    parameters=dict(sm.params.parameters),
    tables=[Path(p) for p in sm.input.tables],
    miou=paths.get("miou", out / "miou.csv"),
    ledger=out / RUNS_CSV,
    last_run=paths["last_run"],
    last_run_text=last_run_text(sm.config, paths["last_run"]),
    stamps=[Path(p) for p in sm.params.stamps],
    log=job.log,
)

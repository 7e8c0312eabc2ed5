"""Rule refine: label maps for one shard from its GradCAM store (logic in pnp_ovss.refine_stage)."""
from pathlib import Path

from pnp_ovss.datasets import get_dataset
from pnp_ovss.refine_stage import run_refine_shard
from pnp_ovss.workflow import stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "refine")
out = Path(sm.output[0])
write_params_yaml(out.parent, sm.params.stage)
run_refine_shard(
    get_dataset(sm.config),
    Path(sm.input.store) / "maps.zarr",
    list(sm.params.ids),
    sm.params.stage,
    out,
    log,
    on_error=sm.config["on_error"],
    threads=sm.threads,
    work_dir=Path(sm.params.work),
)

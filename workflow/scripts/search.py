"""Rule search_score: score the settings with the CLIP weak reward (logic in pnp_ovss.search.run)."""
from pathlib import Path

from pnp_ovss.config import check_search_refine
from pnp_ovss.datasets import get_dataset
from pnp_ovss.protocols import get_protocol
from pnp_ovss.search.run import run_search
from pnp_ovss.workflow import set_model_job_threads, stage_logger, write_params_yaml

sm = snakemake  # noqa: F821 (injected by Snakemake)
log = stage_logger(sm.log[0], "search")
set_model_job_threads(sm.config["gradcam"], sm.threads, log)
cfg = sm.config
out_dir = Path(sm.output.rewards).parent
params = dict(sm.params.stage, backend=sm.params.maps_params["backend"], model=sm.params.maps_params["model"])
check_search_refine(params["refine"])
write_params_yaml(out_dir, params)
dataset = get_dataset(cfg)
protocol = get_protocol(dataset.name, cfg["protocol"], dataset.vocabulary, cfg["mmseg_variant"]) if dataset.has_ground_truth else None
run_search(
    dataset,
    list(sm.params.ids),
    params,
    keys=dict(sm.params.image_keys),
    maps_dir=sm.params.maps_dir,
    out_dir=out_dir,
    device="cpu" if sm.params.device == "cpu" else "auto",
    batch_size=sm.params.batch_size,
    log=log,
    protocol=protocol,
)

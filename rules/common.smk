# Parse-time plan: config validation, image order, shards, sweep runs and stage hashes.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.utils import validate

from pnp_ovss.config import coerce_to_schema, fold_dotted, load_schema
from pnp_ovss.workflow import make_plan, plan_warnings

# `--config refine="{threshold: 0.3}"` arrives with string leaves, and dotted keys (from a config file
# or the API) are nested sections: normalise both before validating.
_normalised = coerce_to_schema(fold_dotted(dict(config)), load_schema())
config.clear()
config.update(_normalised)
validate(config, schema="../config/schema.yaml", set_default=True)

PLAN = make_plan(config)
for _warning in plan_warnings(PLAN.cfg):
    logger.warning(f"pnp-ovss: {_warning}")
OUT = PLAN.out
SHARDS = list(PLAN.shards)
HASH = "[0-9a-f]{10}"


wildcard_constraints:
    shard=r"shard-\d{4}",
    lh=HASH,
    gh=HASH,
    rh=HASH,
    eh=HASH,


def stage_params(stage_hash):
    return PLAN.table[stage_hash]


def shard_ids(wildcards):
    return PLAN.shard_ids(wildcards.shard)


def final_targets():
    """Per run: the evaluation tables and report figures where there is ground truth, else the masks;
    plus the dataset-level miou.csv with one row per sweep combination."""
    if PLAN.evaluates:
        targets = [f"{OUT}/miou.csv"]
        targets += [f"{OUT}/report/{run.evaluate}/per_class_iou.png" for run in PLAN.runs]
        return targets
    return [f"{OUT}/masks/{run.refine}/{shard}" for run in PLAN.runs for shard in SHARDS]

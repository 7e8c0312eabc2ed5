import pytest
import yaml

from pnp_ovss.config import (
    FIX_NAMES,
    coerce_to_schema,
    defaults,
    fold_dotted,
    load_schema,
    normalise,
    plan_runs,
    resolve_fixes,
    short_hash,
)
from pnp_ovss.errors import ConfigError

from support import ROOT


def test_config_yaml_lists_every_key_with_its_schema_default():
    assert yaml.safe_load((ROOT / "config" / "config.yaml").read_text()) == defaults()


def test_every_schema_key_has_a_description():
    def walk(props, where=""):
        for key, sub in props.items():
            assert sub.get("description"), f"{where}{key} has no description"
            if "properties" in sub:
                walk(sub["properties"], f"{where}{key}.")

    walk(load_schema()["properties"])


def test_dotted_keys_fold_into_sections_with_yaml_types():
    assert fold_dotted({"refine.threshold": "0.3", "a": 1}) == {"refine": {"threshold": 0.3}, "a": 1}
    assert fold_dotted({"refine.threshold": "[0.1, 0.2]"})["refine"]["threshold"] == [0.1, 0.2]


def test_command_line_strings_get_schema_types():
    # what snakemake --config refine="{threshold: [0.1, 0.2]}" limit=null delivers (YAML BaseLoader)
    raw = {"refine": {"threshold": ["0.1", "0.2"], "postprocess": "crf"}, "limit": "null", "shard_size": "7"}
    out = coerce_to_schema(raw, load_schema())
    assert out == {"refine": {"threshold": [0.1, 0.2], "postprocess": "crf"}, "limit": None, "shard_size": 7}
    cfg = normalise(raw)
    assert cfg["refine"]["threshold"] == [0.1, 0.2] and cfg["refine"]["blur_scale"] == 0.05


def test_invalid_values_name_the_key():
    with pytest.raises(ConfigError, match="refine.postprocess"):
        normalise({"refine": {"postprocess": "sharpen"}})
    with pytest.raises(ConfigError, match="dataset"):
        normalise({"dataset": "imagenet"})


def test_fixes_follow_mode_unless_set():
    assert not any(resolve_fixes(normalise({"mode": "faithful"})).values())
    assert all(resolve_fixes(normalise({"mode": "clean"})).values())
    fixes = resolve_fixes(normalise({"mode": "clean", "fixes": {"nan_guard": False}}))
    assert fixes["nan_guard"] is False and sum(fixes.values()) == len(FIX_NAMES) - 1


def test_refine_change_keeps_upstream_hashes_and_changing_back_restores_them():
    base, _ = plan_runs(normalise({}))
    changed, _ = plan_runs(normalise({"refine": {"threshold": 0.3}}))
    assert (base[0].labels, base[0].gradcam) == (changed[0].labels, changed[0].gradcam)
    assert base[0].refine != changed[0].refine and base[0].evaluate != changed[0].evaluate
    again, _ = plan_runs(normalise({"refine": {"threshold": 0.15}}))
    assert again == base


def test_sweeps_make_one_run_per_combination():
    runs, table = plan_runs(normalise({"refine": {"threshold": [0.1, 0.2, 0.3]}, "gradcam": {"head": [8, 9]}}))
    assert len(runs) == 6
    assert len({r.gradcam for r in runs}) == 2 and len({r.evaluate for r in runs}) == 6
    assert {table[r.refine]["threshold"] for r in runs} == {0.1, 0.2, 0.3}


def test_hash_is_order_independent_and_sensitive_to_values():
    assert short_hash({"a": 1, "b": 2}) == short_hash({"b": 2, "a": 1})
    assert short_hash({"a": 1, "b": 2}) != short_hash({"a": 2, "b": 1})


def test_faithful_shards_that_cut_batches_are_warned_about():
    from pnp_ovss.plan import plan_warnings

    assert plan_warnings(normalise({})) == []
    assert "not a multiple of gradcam.batch_size 35" in plan_warnings(normalise({"shard_size": 10}))[0]
    assert plan_warnings(normalise({"shard_size": 10, "mode": "clean"})) == []
    assert plan_warnings(normalise({"shard_size": 70})) == []


def test_model_job_threads_few_on_a_gpu_every_core_on_the_cpu_and_the_key_wins():
    from pnp_ovss.config import ALL_CORES, GPU_JOB_THREADS, model_job_threads, torch_threads_for_job

    assert GPU_JOB_THREADS == 4
    assert model_job_threads({"device": "cuda", "threads": None}, cuda_available=False) == 4
    assert model_job_threads({"device": "auto", "threads": None}, cuda_available=True) == 4
    assert model_job_threads({"device": "auto", "threads": None}, cuda_available=False) == ALL_CORES
    assert model_job_threads({"device": "cpu", "threads": None}, cuda_available=True) == ALL_CORES
    assert model_job_threads({"device": "cuda", "threads": 7}, cuda_available=True) == 7
    # torch keeps its own default on a CPU job sized by default (results unchanged from earlier runs)
    assert torch_threads_for_job({"device": "auto", "threads": None}, 2, cuda_available=False) is None
    assert torch_threads_for_job({"device": "auto", "threads": None}, 4, cuda_available=True) == 4
    assert torch_threads_for_job({"device": "cpu", "threads": 1}, 1, cuda_available=False) == 1


def test_gradcam_threads_is_in_no_stage_hash():
    from pnp_ovss.config import normalise, plan_runs

    def hashes(threads):
        runs, table = plan_runs(normalise({"gradcam": {"threads": threads}}))
        return sorted(table)

    assert hashes(None) == hashes(3)
    with pytest.raises(Exception, match="threads"):
        normalise({"gradcam": {"threads": 0}})

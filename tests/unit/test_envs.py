"""envs/pnp-ovss.yaml (for `snakemake --sdm conda`) lists exactly pyproject.toml's dependencies."""

import tomllib

import yaml

from support import ROOT


def test_conda_environment_pins_equal_the_package_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "pnp-ovss.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item)
    assert sorted(pip) == sorted(deps)

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support (helpers, never fixtures)

from support import copy_workflow  # noqa: E402


@pytest.fixture(scope="session")
def mini_tree(tmp_path_factory):
    """The five benchmarks in mmseg layout, fabricated (tests/fabricate.py)."""
    from support.fabricate import fabricate

    root = tmp_path_factory.mktemp("mini")
    ids = fabricate(root, n=4)
    return root, ids


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random BLIP checkpoint, built once for every workflow test."""
    from pnp_ovss.backends.blip import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "blip")


@pytest.fixture(scope="module")
def tiny_blip(tiny_model):
    """The tiny BLIP loaded at 336 px: ``(model, tokenizer)``, once per test module (a test may patch it)."""
    from pnp_ovss.backends.blip import load_blip

    return load_blip(str(tiny_model), image_size=336, device="cpu")


@pytest.fixture(scope="session")
def tiny_bridgetower(tmp_path_factory):
    """A tiny random BridgeTower ITM checkpoint (BPE tokenizer, image processor), built once."""
    from pnp_ovss.backends import get_backend

    return get_backend("bridgetower").write_tiny(tmp_path_factory.mktemp("tiny") / "bridgetower")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP (the search's scorer), built once."""
    from pnp_ovss.backends.clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tiny") / "clip")


@pytest.fixture
def repo_copy(tmp_path):
    """A copy of the workflow files (Snakefile, rules, workflow, config, envs, profiles) in a temp dir."""
    return copy_workflow(tmp_path / "wf")

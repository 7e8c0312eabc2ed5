"""Pins: today's literal stage hashes, per-image keys and tiny-model outputs.

Every result on disk is found again by its stage hash and per-image key, so a refactor that changes one of them
silently throws away every user's results (and one that changes an output silently changes a number). These
literals were taken on main before the house refactor (issue #19); they change only with a deliberate, stated
change of what a result depends on.
"""

import argparse
import hashlib
import json
import shutil

import pytest

from pnp_ovss.config import (
    labels_params,
    normalise,
    search_maps_params,
    search_score_params,
    short_hash,
)
from pnp_ovss.datasets.folder import demo_root
from pnp_ovss.plan import make_plan

CASES = {
    "demo_faithful": {},
    "demo_clean": {"mode": "clean"},
    "folder": {"dataset": "folder", "classes": "sky,water,green grass"},
    "sweep": {"gradcam.layer": [7, 8], "refine.threshold": [0.1, 0.2]},
    "bridgetower": {
        "gradcam.backend": "bridgetower",
        "gradcam.model": "BridgeTower/bridgetower-large-itm-mlm-itc",
    },
    "search": {"search.layers": [7, 8], "search.heads": [0, 5]},
}

PINS = {
    "demo_faithful": {
        "runs": [["c0745e4d1e", "dc3fb97a8d", "1a2c2bc689", "30500f69a1"]],
        "keys": "f60877a65879b1b7",
        "first_image": [
            "forest",
            {
                "1a2c2bc689": "ff41ed065199b46bfaff",
                "30500f69a1": "c495e1ed24dee78ed050",
                "5f1e506c5c": "8b904691ed29b0bf2caa",
                "c0745e4d1e": "3ec048962507a1fbd982",
                "dc3fb97a8d": "a256871a12e9fb20ced0",
            },
        ],
    },
    "demo_clean": {
        "runs": [["66c9ea7d08", "ea399abf90", "e8c3b53f61", "3d5ed98b53"]],
        "keys": "cdf5b0344392e3c7",
        "first_image": [
            "beach",
            {
                "3d5ed98b53": "b8446bded413688dbafd",
                "66c9ea7d08": "86a0fef3ab3d93f66a62",
                "95be89fd18": "a40fbf81fcc17d2dee49",
                "e8c3b53f61": "50f52c39ab85a56a57b4",
                "ea399abf90": "f5a4be0704c6dba453a2",
            },
        ],
    },
    "folder": {
        "runs": [["29b3cfad75", "6c5120e6b9", "8ddafdbe52", "5bb234412a"]],
        "keys": "a03a6eb4ba8847bf",
        "first_image": [
            "meadow",
            {
                "1d5bd9c02b": "3978f38d9be10f3981d8",
                "29b3cfad75": "f1e71c1e0e50e43e2995",
                "5bb234412a": "2e0179a21a589f8044f5",
                "6c5120e6b9": "a2f03df29ef3b9f385b0",
                "8ddafdbe52": "f61949f22c505aa49e83",
            },
        ],
    },
    "sweep": {
        "runs": [
            ["c0745e4d1e", "352053034a", "68fa82c3d6", "4a7358d2c3"],
            ["c0745e4d1e", "352053034a", "576f4eb776", "f44a2f74be"],
            ["c0745e4d1e", "dc3fb97a8d", "7ed6945048", "eee98cf624"],
            ["c0745e4d1e", "dc3fb97a8d", "3a782e2c51", "f48875279b"],
        ],
        "keys": "967120fb4ccfa201",
        "first_image": [
            "forest",
            {
                "352053034a": "0f74c40e4f782080cd80",
                "3a782e2c51": "47119ed19ac075f807d0",
                "4a7358d2c3": "52ce200260094e94e261",
                "576f4eb776": "dcade548f065c32bfd63",
                "5f1e506c5c": "8b904691ed29b0bf2caa",
                "68fa82c3d6": "7cff7136bffe81dfbeae",
                "7ed6945048": "50786114c82cdec00b6d",
                "c0745e4d1e": "3ec048962507a1fbd982",
                "dc3fb97a8d": "a256871a12e9fb20ced0",
                "eee98cf624": "46facb64f71caa978726",
                "f44a2f74be": "57a051072079daa3fb38",
                "f48875279b": "25aa71c0f7344d1d7ebd",
            },
        ],
    },
    "bridgetower": {
        "runs": [["eef5758b3d", "6ca0ecd625", "73836d547a", "9e6cd2f82a"]],
        "keys": "d7c832b57a0217f7",
        "first_image": [
            "forest",
            {
                "2d280a34c0": "b0915ed8a6674af7d867",
                "6ca0ecd625": "f280a079b80ab07b3dcc",
                "73836d547a": "ffeafa470a9b4cc27d32",
                "9e6cd2f82a": "5f18890447565fc8ddb5",
                "eef5758b3d": "9d297ec90302cdbc771c",
            },
        ],
    },
    "search": {
        "runs": [["c0745e4d1e", "dc3fb97a8d", "1a2c2bc689", "30500f69a1"]],
        "keys": "409d29822da6623b",
        "first_image": [
            "forest",
            {
                "1a2c2bc689": "ff41ed065199b46bfaff",
                "30500f69a1": "c495e1ed24dee78ed050",
                "9ae71905cf": "7c72fa1233de9d3881e5",
                "c0745e4d1e": "3ec048962507a1fbd982",
                "dc3fb97a8d": "a256871a12e9fb20ced0",
            },
        ],
        "search": ["9ae71905cf", "e579be217c"],
    },
}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("lake", "beach", "meadow"):
        shutil.copy(demo_root() / "images" / f"{name}.png", folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_stage_hashes_and_image_keys_are_pinned(case, tmp_path, photos):
    cfg = {"results": str(tmp_path / "results"), **CASES[case]}
    if case == "folder":
        cfg["images"] = str(photos)
    plan = make_plan(cfg)
    pin = PINS[case]
    assert [[r.labels, r.gradcam, r.refine, r.evaluate] for r in plan.runs] == pin[
        "runs"
    ]
    keys = {
        h: {i: k for job in jobs for i, k in job.keys.items()}
        for h, jobs in plan.stage_jobs.items()
    }
    first, first_keys = pin["first_image"]
    assert plan.image_ids[0] == first
    assert {h: keys[h][first] for h in sorted(keys)} == first_keys
    assert _digest(keys) == pin["keys"]
    if "search" in pin:
        n = normalise(cfg)
        maps = short_hash(search_maps_params(n, short_hash(labels_params(n))))
        assert [maps, short_hash(search_score_params(n, maps))] == pin["search"]


OUTPUTS = {
    "blip_clean": {
        "beach": "5ab9d3c89b8f6804",
        "lake": "96c58940a4736b58",
        "meadow": "ed24a1ab12f125e4",
    },
    "blip_faithful": {
        "beach": "3b794b9c6c852058",
        "lake": "3a76c620e7c7888d",
        "meadow": "6051eb987b69cdd1",
    },
    "bridgetower": {
        "beach": "619023277e16de54",
        "lake": "68d91ad370f9d2dd",
        "meadow": "eb612bc319df4616",
    },
}


@pytest.mark.parametrize("case", sorted(OUTPUTS))
def test_tiny_model_masks_are_pinned(case, tmp_path, tiny_model, tiny_bridgetower):
    from pnp_ovss.segment import segment

    model, backend = (
        (tiny_bridgetower, "bridgetower")
        if case == "bridgetower"
        else (tiny_model, "blip")
    )
    mode = "faithful" if case == "blip_faithful" else "clean"
    args = argparse.Namespace(
        mode=mode,
        gpt4o=False,
        device="cpu",
        backend=backend,
        model=str(model),
        set=["refine.threshold=0.2"],
    )
    images = [
        demo_root() / "images" / f"{name}.png" for name in ("lake", "beach", "meadow")
    ]
    segment(images, "sky,water,green grass,sand", tmp_path, args)
    got = {
        name: hashlib.sha256((tmp_path / f"{name}.png").read_bytes()).hexdigest()[:16]
        for name in OUTPUTS[case]
    }
    assert got == OUTPUTS[case]

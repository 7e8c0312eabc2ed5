"""``pnp-ovss segment`` on real image files with the tiny BLIP: label maps and overlays are written."""

import subprocess
import sys

import numpy as np
from PIL import Image

from pnp_ovss.datasets.folder import demo_root


def test_segment_writes_label_and_overlay_pngs(tmp_path, tiny_model):
    model = tiny_model
    images = [demo_root() / "images" / "lake.png", demo_root() / "images" / "beach.png"]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pnp_ovss.cli", "segment", *map(str, images), "--classes", "sky,water,grass,sand,キツネ",
         "--out", str(out), "--model", str(model), "--device", "cpu", "--set", "refine.threshold=0.2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("lake", "beach"):
        with Image.open(out / f"{name}.png") as im:
            assert im.mode == "P" and im.size == (320, 240)
            labels = np.asarray(im)
        assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5}
        with Image.open(out / f"{name}_overlay.png") as ov:
            assert ov.size[0] == 320 and ov.size[1] > 240  # the legend strip below the photo
    assert str(out / "lake_overlay.png") in proc.stdout
    assert "pnp-ovss segment: mode clean" in proc.stderr  # segment says which mode it runs
    assert "warning: class 'キツネ': every word piece is unknown to the tokenizer" in proc.stderr


def test_segment_rejects_a_sweep_and_a_missing_image(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pnp_ovss.cli", "segment", str(tmp_path / "nope.jpg"), "--classes", "cat",
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "nope.jpg: image not found" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "pnp_ovss.cli", "segment", str(demo_root() / "images" / "lake.png"), "--classes",
         "sky", "--out", str(tmp_path / "o"), "--set", "refine.threshold=[0.1,0.2]"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "one value, not a sweep" in proc.stderr


def test_segment_with_the_bridgetower_backend(tmp_path, tiny_bridgetower):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pnp_ovss.cli", "segment", str(demo_root() / "images" / "meadow.png"), "--classes",
         "sky,green grass,tree", "--out", str(out), "--model", str(tiny_bridgetower), "--backend", "bridgetower",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(out / "meadow.png") as im:
        assert im.mode == "P" and im.size == (320, 240)
        assert set(np.unique(np.asarray(im))) <= {0, 1, 2, 3}
    # a BLIP backend on a BridgeTower checkpoint is refused with what to do
    proc = subprocess.run(
        [sys.executable, "-m", "pnp_ovss.cli", "segment", str(demo_root() / "images" / "meadow.png"), "--classes",
         "sky", "--out", str(tmp_path / "o2"), "--model", str(tiny_bridgetower), "--backend", "blip", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1 and "'bridgetower' checkpoint but gradcam.backend is 'blip'" in proc.stderr

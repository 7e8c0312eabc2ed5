"""Equivalence report of the opt-in fused vision attention (``gradcam.vision_attention: sdpa``) against the
released eager computation, on BLIP-ITM-large with random weights (no download).

    python benchmarks/vision_sdpa_report.py                    # the demo and the five fabricated trees, CPU
    python benchmarks/vision_sdpa_report.py --device cuda --autocast bf16

Images: the embedded demo set and a fabricated mini tree of each benchmark (tests/fabricate.py), labelled with
their ground-truth classes (the oracle), preprocessed as the workflow does (faithful mode). The same model runs
each batch twice, eager and with the vision tower's self-attention through torch SDPA. Printed per dataset:
images, seconds per image of each, the speed-up, the largest map difference (absolute, and relative to the
largest map value), and how many dropped-patch rows (image × drop iteration) are identical.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from gradcam_speed import build_model, timed  # noqa: E402

from pnp_ovss.backends import get_backend  # noqa: E402
from pnp_ovss.datasets import get_dataset  # noqa: E402
from pnp_ovss.backends.blip import gradcam_batch  # noqa: E402
from pnp_ovss.gradcam import preprocess_image, uses_released_ade_input  # noqa: E402
from pnp_ovss.io import read_image  # noqa: E402
from pnp_ovss.backends.loading import resolve_device  # noqa: E402

PARAMS = dict(layer=8, head=9, drop_iter=4, drop_patches=10, exclude_sep_rows=False, mean_last_class=False,
              normalize_ade=False, autocast="none")


def dataset_inputs(name: str, data_root: Path | None, size: int, limit: int):
    cfg = {"dataset": name, "data_root": str(data_root) if data_root else "data", "protocol": "pnp"}
    ds = get_dataset(cfg)
    released_ade = uses_released_ade_input(getattr(ds, "unnormalised_input", False), PARAMS)
    pixels, names = [], []
    for image_id in ds.image_ids()[:limit]:
        classes = [ds.vocabulary.name(i) for i in ds.gt_class_ids(image_id)][:6]
        if not classes:
            continue
        pixels.append(preprocess_image(Image.fromarray(read_image(ds.image_path(image_id))), size, released_ade))
        names.append(classes)
    return pixels, names


def unfuse(model) -> None:
    for layer in model.vision_model.encoder.layers:
        layer.self_attn.__dict__.pop("forward", None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2, help="images per fabricated tree (the demo has 6)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--autocast", default="none", choices=["none", "bf16", "fp16"])
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    torch.manual_seed(0)
    model, tok, size, _ = build_model("blip", "base")
    model.eval().requires_grad_(False).to(device)
    params = dict(PARAMS, autocast=a.autocast)
    backend = get_backend("blip")
    from support.fabricate import fabricate

    with tempfile.TemporaryDirectory() as tmp:
        fabricate(Path(tmp), n=a.images)
        sets = [("demo", None)] + [(n, Path(tmp)) for n in ("voc", "psc", "ade20k", "coco_object", "coco_stuff")]
        print(f"BLIP-ITM-large, random weights, {size} px, device {device}, autocast {a.autocast}, "
              f"batches of {a.batch_size}, {PARAMS['drop_iter']} drop iterations")
        print(f"{'dataset':<12} {'images':>6} {'eager s/img':>11} {'sdpa s/img':>10} {'speed-up':>8} "
              f"{'max |Δmap|':>11} {'relative':>9} {'dropped rows equal':>19}")
        totals = {"rows": 0, "equal": 0}
        # warm-up of both paths (first calls allocate), not timed
        warm_pixels, warm_names = dataset_inputs("demo", None, size, 1)
        for mode in ("eager", "sdpa"):
            if mode == "sdpa":
                backend.use_fused_vision_attention(model)
            gradcam_batch(model, tok, torch.stack(warm_pixels).to(device), warm_names, dict(params, drop_iter=1))
            unfuse(model)
        for name, root in sets:
            pixels, names = dataset_inputs(name, root, size, 6 if name == "demo" else a.images)
            results = {}
            seconds = {}
            for mode in ("eager", "sdpa"):
                if mode == "sdpa":
                    backend.use_fused_vision_attention(model)
                out, spent = [], 0.0
                for i in range(0, len(pixels), a.batch_size):
                    x = torch.stack(pixels[i:i + a.batch_size]).to(device)
                    res, t = timed(lambda: gradcam_batch(model, tok, x, names[i:i + a.batch_size], params), device)
                    out += res
                    spent += t
                unfuse(model)
                results[mode], seconds[mode] = out, spent / max(len(pixels), 1)
            diff = max(float(np.abs(e.maps - f.maps).max()) for e, f in zip(results["eager"], results["sdpa"]))
            scale = max(float(np.abs(e.maps).max()) for e in results["eager"])
            rows = sum(e.dropped.shape[0] for e in results["eager"])  # [drop iterations, patches] per image
            equal = sum(int((e.dropped == f.dropped).all(axis=-1).sum()) for e, f in zip(results["eager"], results["sdpa"]))
            totals["rows"] += rows
            totals["equal"] += equal
            print(f"{name:<12} {len(pixels):>6} {seconds['eager']:>11.2f} {seconds['sdpa']:>10.2f} "
                  f"{seconds['eager'] / seconds['sdpa']:>7.2f}x {diff:>11.2e} {diff / scale:>9.1e} "
                  f"{equal:>10}/{rows:<8}")
        print(f"dropped-patch rows identical: {totals['equal']} of {totals['rows']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

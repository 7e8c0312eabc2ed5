"""Refine stage peak memory and wall time on one large synthetic photo, by megapixel count (Linux).

    python benchmarks/refine_memory.py [--megapixels 12 24 48] [--classes 3] [--postprocess blur+crf]
                                       [--budget-gib 8]

Each size runs `refine_image` (threshold, upsample to the image size, background channel, blur, DenseCRF)
once in a fresh spawned process with the config's default refine parameters (faithful mode, the `folder`
dataset's background rule), so each peak is that size's alone. The inputs are a 4:3 uint8 photo (a smooth
random colour field plus noise, so the bilateral CRF kernel sees many colours) and GradCAM maps
[K, drop_iter, P, P] at the default model's patch grid (smooth random values, nothing in the top rows,
like a sky: the background channel is then not constant and faithful mode runs the CRF rather than
short-cutting a NaN unary). The child's peak RSS (VmHWM) is reset after the imports and inputs, whose RSS
is the baseline.
Prints a markdown table (megapixels, WxH, wall s, peak RSS GiB, peak above baseline GiB, bytes per pixel
above baseline), then the largest megapixel count whose peak stays under --budget-gib by a linear fit of
peak vs pixels.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from pnp_ovss import config as C
from pnp_ovss.descriptors import descriptor
from pnp_ovss.refine import POSTPROCESS_CHOICES

GIB = 2**30
PATCH = 16  # the BLIP ViT's patch size


def size_of(megapixels: float) -> tuple[int, int]:
    """(W, H) of a 4:3 photo of that many megapixels: 12 → 4000x3000."""
    w = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    return w, round(w * 3 / 4)


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def synthetic_inputs(w: int, h: int, k: int, drop_iter: int, grid: int, seed: int = 0):
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = rng.integers(0, 240, size=(24, 32, 3), dtype=np.uint8)
    image = np.array(Image.fromarray(field).resize((w, h), Image.BICUBIC))
    image += rng.integers(0, 16, size=image.shape, dtype=np.uint8)  # ≤ 239 + 15: no overflow
    smooth = ndimage.gaussian_filter(rng.random((k, grid, grid)), sigma=(0, 2, 2))
    smooth[:, : grid // 4] = 0
    maps = smooth[:, None] + 0.05 * rng.random((k, drop_iter, grid, grid)) * (smooth[:, None] > 0)
    return maps.astype(np.float32), image


def measure(w: int, h: int, k: int, postprocess: str) -> tuple[float, int, int]:
    """In the child: wall seconds, baseline RSS and peak RSS (bytes) of one refine_image call."""
    import pydensecrf.densecrf  # noqa: F401  (imported lazily by the CRF step: count it in the baseline)

    from pnp_ovss.refine import refine_image

    cfg = C.normalise({"dataset": "folder"})
    params = C.refine_params(cfg, {**cfg["refine"], "postprocess": postprocess}, "")
    grid = cfg["gradcam"]["image_size"] // PATCH
    maps, image = synthetic_inputs(w, h, k, cfg["gradcam"]["drop_iter"], grid)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    baseline = status_kib("VmRSS") * 1024
    tic = time.perf_counter()
    refine_image(maps, image, list(range(1, k + 1)), params, descriptor("folder").background_rule)
    wall = time.perf_counter() - tic
    return wall, baseline, status_kib("VmHWM") * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, nargs="+", default=[12, 24, 48])
    ap.add_argument("--classes", type=int, default=3, help="K, the classes in the maps")
    ap.add_argument("--postprocess", choices=POSTPROCESS_CHOICES, default=C.defaults()["refine"]["postprocess"])
    ap.add_argument("--budget-gib", type=float, default=8.0, help="peak RSS one refine job may use")
    a = ap.parse_args()

    with open("/proc/meminfo") as f:
        ram = int(f.readline().split()[1]) * 1024 / GIB
    print(f"refine_image, {a.postprocess}, K={a.classes}; {datetime.date.today()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {ram:.0f} GiB RAM")
    print()
    print("| MP | WxH | wall s | peak RSS GiB | above baseline GiB | bytes/pixel |")
    print("|---:|---|---:|---:|---:|---:|")
    ctx = multiprocessing.get_context("spawn")
    pixels, peaks = [], []
    for mp in a.megapixels:
        w, h = size_of(mp)
        try:
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                wall, baseline, peak = pool.submit(measure, w, h, a.classes, a.postprocess).result()
        except BrokenProcessPool:  # the kernel's OOM killer, typically
            print(f"| {w * h / 1e6:.1f} | {w}x{h} | child killed | | | |", flush=True)
            continue
        pixels.append(w * h)
        peaks.append(peak)
        print(f"| {w * h / 1e6:.1f} | {w}x{h} | {wall:.1f} | {peak / GIB:.2f} | {(peak - baseline) / GIB:.2f} "
              f"| {(peak - baseline) / (w * h):.0f} |", flush=True)
    if len(pixels) > 1:
        slope, intercept = np.polyfit(pixels, peaks, 1)
        largest = (a.budget_gib * GIB - intercept) / slope / 1e6
        w, h = size_of(largest)
        print(f"\nfit: peak ≈ {intercept / GIB:.2f} GiB + {slope:.0f} bytes/pixel; under {a.budget_gib:g} GiB: "
              f"at most {largest:.0f} MP ({w}x{h})")


if __name__ == "__main__":
    main()

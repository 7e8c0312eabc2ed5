"""Refine stage speed on the CPU: seconds per image of refine_image for each post-processing variant.

    python benchmarks/refine_speed.py [--height 375 --width 500 --classes 3 10 --repeats 3]

Synthetic GradCAM maps (random) on a demo landscape; released parameters with the NaN guard on (in
faithful mode a constant background channel turns the whole image into NaN and the CRF is skipped,
which would time nothing).
Prints a table: postprocess, classes, seconds per image (best of the repeats) and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from PIL import Image

from pnp_ovss.demo import render_scene
from pnp_ovss.refine import RELEASED_PARAMS, refine_image


def synthetic_inputs(h: int, w: int, k: int, seed: int = 0):
    """Random patch maps and a demo landscape resized to h x w (a photo-like image: the bilateral CRF
    kernel's cost depends on how many distinct colours it sees, so pure noise would mislead)."""
    rng = np.random.default_rng(seed)
    maps = rng.random((k, 4, 21, 21)).astype(np.float32) ** 3
    scene, _ = render_scene(1, ("mountain", "water", "grass", "tree"))
    image = np.asarray(Image.fromarray(scene).resize((w, h), Image.BICUBIC))
    return maps, image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--classes", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"refine_image on a {a.width}x{a.height} image, best of {a.repeats}")
    print(f"{'postprocess':<10} {'classes':>7} {'s/image':>8} {'peak RSS MiB':>13}")
    for post in ("blur+crf", "crf", "blur", "none"):
        for k in a.classes:
            maps, image = synthetic_inputs(a.height, a.width, k)
            params = {**RELEASED_PARAMS, "postprocess": post, "nan_guard": True}
            best = float("inf")
            for _ in range(a.repeats):
                tic = time.perf_counter()
                refine_image(maps, image, list(range(1, k + 1)), params, "always")
                best = min(best, time.perf_counter() - tic)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{post:<10} {k:>7} {best:>8.3f} {rss:>13.0f}")


if __name__ == "__main__":
    main()

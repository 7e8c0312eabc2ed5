"""`pnp-ovss prepare` speed: images per second for each benchmark, from fabricated official downloads.

    python benchmarks/prepare_speed.py [--images 60 --jobs 1 2]

The downloads are fabricated in their distributed structure (tests/support/fabricate_downloads.py) at the benchmarks'
typical sizes (500x375 and 640x480), so the conversions cost what they cost on the real files; reading the
real multi-GB archives adds disk time that cannot be measured here. Each (dataset, jobs) row prepares a fresh
data root. Prints a table: dataset, images, jobs, seconds, images/s, files written.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.fabricate_downloads import fabricate_downloads  # noqa: E402

from pnp_ovss.prepare.cli import prepare_dataset  # noqa: E402

SIZES = [(375, 500), (480, 640), (500, 375), (427, 640)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60, help="images per benchmark")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--datasets", nargs="+", default=["voc", "psc", "ade20k", "coco_stuff", "coco_object"])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        downloads = Path(tmp) / "downloads"
        tic = time.perf_counter()
        fabricate_downloads(downloads, n=a.images, sizes=SIZES)
        print(f"fabricated downloads of {a.images} images per benchmark in {time.perf_counter() - tic:.1f} s")
        print(f"{'dataset':<12} {'images':>6} {'jobs':>4} {'seconds':>8} {'images/s':>9} {'files':>6}")
        for dataset in a.datasets:
            for jobs in a.jobs:
                root = Path(tmp) / f"data-{dataset}-{jobs}"
                tic = time.perf_counter()
                record = prepare_dataset(dataset, downloads, root, jobs=jobs, force=False, verify=False,
                                         check=False, progress=False, out=lambda line: None)
                seconds = time.perf_counter() - tic
                print(f"{dataset:<12} {record['images']:>6} {jobs:>4} {seconds:>8.2f} "
                      f"{record['images'] / seconds:>9.1f} {record['files_written']:>6}")


if __name__ == "__main__":
    main()

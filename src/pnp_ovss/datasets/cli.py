"""``pnp-ovss datasets``: check a dataset layout and list its split."""

from __future__ import annotations

import argparse

from ..config import normalise
from ..descriptors import DATASET_NAMES
from ..ordering import faithful_order
from . import get_dataset


def _check(args: argparse.Namespace) -> int:
    overrides = {"dataset": args.dataset, "data_root": args.data_root, "protocol": args.protocol}
    if args.images:
        overrides["images"] = args.images
    if args.classes:
        overrides["classes"] = args.classes
    cfg = normalise(overrides)
    ds = get_dataset(cfg)
    ids = ds.image_ids()
    print(f"{ds.name}: {len(ids)} images, {len(ds.vocabulary)} classes, root {ds.root}")
    n = min(args.sample, len(ids))
    for image_id in faithful_order(ids)[:n]:
        h, w = ds.image_size(image_id)
        line = f"  {image_id}: {w}x{h}"
        if ds.has_ground_truth:
            gt = ds.ground_truth(image_id, args.protocol)
            line += f", ground truth classes {sorted(set(gt.ravel().tolist()))}"
        print(line)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("datasets", help="check a dataset's layout and annotations")
    sub = p.add_subparsers(dest="datasets_command", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="open the split and read a few images and annotations")
    c.add_argument("--dataset", required=True, choices=list(DATASET_NAMES))
    c.add_argument("--data-root", default="data")
    c.add_argument("--images", help="dataset=folder: image directory")
    c.add_argument("--classes", help="dataset=folder: class names")
    c.add_argument("--protocol", default="pnp", choices=["pnp", "mmseg"])
    c.add_argument("--sample", type=int, default=3, help="how many images to read")
    c.set_defaults(func=_check)

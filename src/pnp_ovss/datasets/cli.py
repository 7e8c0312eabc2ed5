"""``pnp-ovss datasets``: check a dataset layout and list its split."""

from __future__ import annotations

import argparse

from ..config import normalise
from ..descriptors import DATASET_NAMES, DESCRIPTORS
from ..ordering import faithful_order
from . import get_dataset


def check_dataset(dataset: str, data_root, *, protocol: str = "pnp", sample: int = 3, images=None,
                  classes=None) -> list[str]:
    """Open a dataset's split, read ``sample`` images and annotations, and say what was found: one line per
    finding, a ``WARNING`` line when a benchmark's split does not have its full image count."""
    overrides = {"dataset": dataset, "data_root": str(data_root), "protocol": protocol}
    if images:
        overrides["images"] = images
    if classes:
        overrides["classes"] = classes
    cfg = normalise(overrides)
    ds = get_dataset(cfg)
    ids = ds.image_ids()
    lines = [f"{ds.name}: {len(ids)} images, {len(ds.vocabulary)} classes, root {ds.root}"]
    expected = DESCRIPTORS[ds.name].expected_images if ds.name in DESCRIPTORS else None
    if expected is not None and len(ids) != expected:
        lines.append(f"WARNING: {len(ids)} images; the complete {ds.name} split has {expected} "
                     "(an incomplete download, or a subset on purpose)")
    for image_id in faithful_order(ids)[: min(sample, len(ids))]:
        h, w = ds.image_size(image_id)
        line = f"  {image_id}: {w}x{h}"
        if ds.has_ground_truth:
            gt = ds.ground_truth(image_id, protocol)
            line += f", ground truth ({protocol}) classes {sorted(set(gt.ravel().tolist()))}"
        lines.append(line)
    return lines


def _check(args: argparse.Namespace) -> int:
    for line in check_dataset(args.dataset, args.data_root, protocol=args.protocol, sample=args.sample,
                              images=args.images, classes=args.classes):
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

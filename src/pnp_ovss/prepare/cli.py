"""``pnp-ovss prepare --dataset NAME --downloads DIR --data-root DIR``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..descriptors import BENCHMARKS, DESCRIPTORS
from ..errors import PnpOvssError
from ..io import atomic_write_json
from .plans import NEEDS, PLANNERS
from .run import default_jobs, execute
from .sources import DOWNLOADS, PrepareError, VerifiedCache, open_source

#: bookkeeping under data_root: verified checksums, one record per prepared dataset
STATE_DIR = ".pnp-ovss-prepare"


def _protocols(name: str) -> tuple[str, ...]:
    # the mmseg protocol reads files that only prepare's conversions make for the COCO sets
    return ("pnp", "mmseg") if name in ("coco_stuff", "coco_object") else ("pnp",)


def prepare_dataset(name: str, downloads: Path, data_root: Path, *, jobs: int, force: bool, verify: bool,
                    check: bool, progress: bool = True, out=print) -> dict:
    """Prepare one benchmark; returns its record (also written to ``<data_root>/.pnp-ovss-prepare/NAME.json``)."""
    cache = VerifiedCache(data_root / STATE_DIR / "verified.json")
    opened = {}

    def source(key: str):
        if key not in opened:
            opened[key] = open_source(DOWNLOADS[key], downloads, cache=cache, check=verify,
                                      log=lambda m: out(f"{name}: {m}"))
            out(f"{name}: {DOWNLOADS[key].title}: {opened[key].path}")
        return opened[key]

    plan = PLANNERS[name](source)
    report = execute(plan, data_root, jobs=jobs, force=force, progress=progress)
    out(f"{name}: {report.images} images — {report.written} files written, {report.kept} already there, "
        f"{report.seconds:.1f} s ({report.images_per_second:.1f} images/s, {jobs} job{'s' if jobs != 1 else ''})")
    for note in plan.notes:
        out(f"{name}: {note}")
    for w in report.warnings[:10]:
        out(f"{name}: WARNING: {w}")
    if len(report.warnings) > 10:
        out(f"{name}: WARNING: ... and {len(report.warnings) - 10} more")
    expected = DESCRIPTORS[name].expected_images
    record = {
        "dataset": name, "images": report.images, "expected_images": expected,
        "files_written": report.written, "files_kept": report.kept, "seconds": round(report.seconds, 3),
        "sources": {k: str(s.path) for k, s in opened.items()}, "verified_checksums": verify,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "warnings": len(report.warnings),
    }
    atomic_write_json(data_root / STATE_DIR / f"{name}.json", record)
    if check:
        from ..datasets.cli import check_dataset

        for protocol in _protocols(name):
            for line in check_dataset(name, data_root, protocol=protocol):
                out(f"check: {line}")
    return record


def _download(name: str, downloads: Path, data_root: Path, args: argparse.Namespace) -> None:
    """``--download``: fetch what ``name`` needs into ``downloads`` (md5s verified here are not computed again)."""
    from .fetch import fetch_for_dataset

    fetch_for_dataset(name, downloads, mirror=args.mirror, progress=not args.quiet, verify=not args.no_verify,
                      cache=VerifiedCache(data_root / STATE_DIR / "verified.json"),
                      log=lambda message: print(f"{name}: {message}"))


def _run(args: argparse.Namespace) -> int:
    names = list(BENCHMARKS) if args.dataset == "all" else [args.dataset]
    downloads, data_root = Path(args.downloads), Path(args.data_root)
    jobs = args.jobs or default_jobs()
    if args.mirror and not args.download:
        raise PrepareError("--mirror is where --download fetches from; pass --download with it")
    if args.download:
        downloads.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        try:
            if args.download:
                _download(name, downloads, data_root, args)
            prepare_dataset(name, downloads, data_root, jobs=jobs, force=args.force, verify=not args.no_verify,
                            check=not args.no_check, progress=not args.quiet)
        except PnpOvssError as exc:
            if len(names) == 1:
                raise
            print(f"pnp-ovss: {name}: error: {exc}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"pnp-ovss: prepared {len(names) - len(failed)} of {len(names)}; not prepared: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


def _needs_text() -> str:
    lines = []
    for name, keys in NEEDS.items():
        files = " + ".join(DOWNLOADS[k].file_names[0] for k in keys)
        lines.append(f"  {name:<12} {files}")
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="make a benchmark's layout from the official downloads",
        description="Write a benchmark in the layout the dataset adapters read (docs/datasets.md), from the "
                    "official downloads as distributed (archives) or extracted (folders), then run "
                    "`pnp-ovss datasets check` on it. Reruns write only what is missing.",
        epilog="downloads each dataset needs (in --downloads, as archives or extracted folders):\n" + _needs_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, choices=list(PLANNERS) + ["all"])
    p.add_argument("--downloads", required=True, help="folder holding the official archives or their extracted folders")
    p.add_argument("--data-root", default="data", help="where the benchmark folders are written (the workflow's data_root)")
    p.add_argument("--jobs", type=int, default=0, help="conversion processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="rewrite every file, even those already there")
    p.add_argument("--no-verify", action="store_true", help="skip the size/md5 check of archives (a repacked copy)")
    p.add_argument("--no-check", action="store_true", help="do not run `datasets check` afterwards")
    p.add_argument("--download", action="store_true",
                   help="fetch the official files the dataset needs into --downloads first; files behind a login "
                        "get a message saying where to register and where to put them")
    p.add_argument("--mirror", metavar="URL",
                   help="with --download: fetch URL/<official file name> instead of the official URLs "
                        "(another host serving the same files)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)

"""The ``pnp-ovss`` command. Each module with sub-commands exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import PnpOvssError

# Modules that add sub-commands (each defines ``register(subparsers)``; the handler is set with
# ``parser.set_defaults(func=...)`` and receives the parsed ``args``; it returns an exit code).
COMMAND_MODULES = [
    "pnp_ovss.datasets.cli",
    "pnp_ovss.segment",
    "pnp_ovss.labels.cli",
    "pnp_ovss.backends.cli",
    "pnp_ovss.prepare.cli",
    "pnp_ovss.app",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pnp-ovss",
        description="Training-free open-vocabulary semantic segmentation (PnP-OVSS).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PnpOvssError as exc:
        print(f"pnp-ovss: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

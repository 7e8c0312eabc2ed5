"""``pnp-ovss tiny-model``: a tiny random checkpoint of a backend (or the search's CLIP) for offline tests."""

from __future__ import annotations

from . import BACKEND_FACTS, get_backend


def _cmd_tiny_model(args) -> int:
    if args.clip:
        from .clip import write_tiny_clip

        path = write_tiny_clip(args.directory, seed=args.seed)
        print(f"tiny random CLIP written to {path}; use it with: snakemake search --config 'search={{clip_model: {path}}}'")
        return 0
    backend = get_backend(args.backend)
    path = backend.write_tiny(args.directory, seed=args.seed)
    choice = "" if backend.name == "blip" else f"backend: {backend.name}, "
    print(
        f"{backend.tiny_description} written to {path}; use it with: "
        f"snakemake --cores all --config 'gradcam={{{choice}model: {path}}}'"
    )
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tiny-model",
        help="write a tiny random ITM checkpoint (for offline tests: --config 'gradcam={model: DIR}')",
        description="Write a tiny randomly initialised ITM model of a backend with its tokenizer (and image "
        "processor) files to DIR, loadable like the real checkpoint (no download).",
    )
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--backend", choices=list(BACKEND_FACTS), default="blip", help="model family (default: blip)")
    p.add_argument("--clip", action="store_true", help="write a tiny random CLIP (the search's scorer) instead")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_tiny_model)

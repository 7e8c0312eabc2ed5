"""Loading a checkpoint, whatever its model family: the device, the error that names what to do when a
checkpoint is neither on disk nor in the Hugging Face cache, and the image statistics of its processor config.
The backends' loaders (:mod:`.blip`, :mod:`.bridgetower`) and the search's CLIP (:mod:`.clip`) share these.

Nothing here downloads at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import ModelError
from ..gradcam import CLIP_MEAN, CLIP_STD
from .checkpoints import looks_like_hub_id


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but no CUDA GPU is available (use device: auto or cpu)")
    return torch.device(device)


def straight_to(device: torch.device) -> dict:
    """``from_pretrained`` options that put the weights on ``device`` as they are read (no whole CPU copy of the
    model first, then a second on the GPU): ``device_map`` (needs ``accelerate``, a dependency); without
    accelerate nothing, and the caller's ``.to(device)`` moves them afterwards."""
    from importlib.util import find_spec

    return {"device_map": str(device)} if find_spec("accelerate") is not None else {}


def offline_hint(model_id: str, exc: Exception) -> ModelError:
    if not looks_like_hub_id(model_id):
        return ModelError(
            f"cannot load model {model_id!r}: no checkpoint directory there (looked in "
            f"{Path(model_id).expanduser().absolute()}); check the path, or write a test model with "
            f"`pnp-ovss tiny-model {model_id}`"
        )
    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "unset"
    return ModelError(
        f"cannot load model {model_id!r}: it is neither a local model directory nor in the Hugging Face cache, "
        f"and it could not be downloaded (HF_HUB_OFFLINE={offline}). On a machine with network access run "
        f"`hf download {model_id}` (or unset HF_HUB_OFFLINE), or pass a local directory; for an offline test "
        f"model see `pnp-ovss tiny-model DIR`. ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    )


def read_processor_config(model_id: str) -> dict:
    """The checkpoint's ``preprocessor_config.json`` (a local directory or the Hugging Face cache/Hub), or
    ``{}`` when it has none; an unreadable file is a :class:`ModelError` naming it."""
    path = Path(str(model_id)).expanduser() / "preprocessor_config.json"
    if not path.is_file():
        try:
            from transformers.utils import cached_file

            found = cached_file(str(model_id), "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        except Exception:  # noqa: BLE001 - no processor file: the caller's published defaults
            found = None
        if not found:
            return {}
        path = Path(found)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable image processor config ({exc})") from None


def image_stats(model_id: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``image_mean`` / ``image_std`` of the checkpoint's processor config; OpenAI CLIP's when it has none
    (the values every CLIP-vision checkpoint here uses)."""
    cfg = read_processor_config(model_id)
    try:
        return tuple(float(v) for v in cfg.get("image_mean", CLIP_MEAN)), tuple(float(v) for v in cfg.get("image_std", CLIP_STD))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{model_id}: image_mean/image_std in its processor config are not numbers ({exc})") from None

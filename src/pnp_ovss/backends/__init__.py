"""Vision-language backends behind one interface (:class:`~pnp_ovss.backends.base.Backend`).

``gradcam.backend`` names one of :data:`BACKENDS`, or ``auto``: the ``model_type`` in the checkpoint's
config.json (a local directory or the Hugging Face cache), else the model id's name.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import ConfigError
from .base import Backend, Defaults, LoadedModel
from .blip import BlipBackend
from .bridgetower import BridgeTowerBackend

BACKENDS: dict[str, Backend] = {b.name: b for b in (BlipBackend(), BridgeTowerBackend())}
#: the config's choices (``auto`` resolved by :func:`resolve_backend_name`)
CHOICES = ("auto",) + tuple(BACKENDS)

__all__ = ["BACKENDS", "CHOICES", "Backend", "Defaults", "LoadedModel", "get_backend", "resolve_backend_name", "load_model"]


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(CHOICES)}") from None


def _model_type(model: str) -> str | None:
    """``model_type`` from config.json of a local checkpoint or one already in the Hugging Face cache."""
    path = Path(str(model)).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(model), "config.json")
        except Exception:  # noqa: BLE001 - no cache information
            cached = None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=None)
def resolve_backend_name(requested: str, model: str) -> str:
    """The backend that runs ``model``: ``requested`` itself, or for ``auto`` the checkpoint's
    ``model_type`` (else a backend name inside the model id, e.g. ``BridgeTower/bridgetower-base-itm-mlm``)."""
    if requested != "auto":
        get_backend(requested)
        return requested
    kind = _model_type(model)
    by_type = {b.model_type: b.name for b in BACKENDS.values()}
    if kind is not None:
        if kind in by_type:
            return by_type[kind]
        raise ConfigError(
            f"gradcam.backend=auto: {model} is a {kind!r} checkpoint, which no backend runs "
            f"(backends: {', '.join(BACKENDS)})"
        )
    lowered = str(model).lower()
    named = [name for name in BACKENDS if name in lowered]
    if len(named) == 1:
        return named[0]
    raise ConfigError(
        f"gradcam.backend=auto cannot tell which backend runs {model} (no config.json at hand offline); "
        f"set gradcam.backend to one of {', '.join(BACKENDS)}"
    )


def load_model(backend: str, model: str, image_size: int, device: str) -> LoadedModel:
    """Load ``model`` with the backend ``backend`` (``auto`` resolved)."""
    return get_backend(resolve_backend_name(backend, str(model))).load(str(model), image_size, device)

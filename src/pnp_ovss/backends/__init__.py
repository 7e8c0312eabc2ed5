"""Vision-language backends behind one interface (:class:`~pnp_ovss.backends.base.Backend`).

This module is the torch-free registry: what parsing and planning need to know of each backend (its name,
the ``model_type`` of its checkpoints, its default setting, whether the released code's quirks exist for it)
is here as plain facts, and the implementation (which imports torch and transformers) is imported only when a
job asks for it with :func:`get_backend`.

``gradcam.backend`` names one of :data:`BACKEND_FACTS`, or ``auto``: the ``model_type`` in the checkpoint's
config.json (a local directory or the Hugging Face cache), else the model id's name.
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True)
class Defaults:
    """A backend's recorded default setting and how it was chosen."""

    layer: int
    head: int
    threshold: float
    chosen_by: str


@dataclass(frozen=True)
class BackendFacts:
    """What is known of a backend without importing it."""

    #: the name used in the config (``gradcam.backend``)
    name: str
    #: ``model_type`` of the checkpoint's config.json (what ``backend: auto`` reads)
    model_type: str
    #: the released code's quirks that are artefacts of its BLIP code (ALGORITHM.md §10.4, §10.7, §1.2) can
    #: be reproduced (faithful mode); a backend without a released reference runs the clean rules
    has_faithful_reference: bool
    defaults: Defaults
    #: what ``pnp-ovss tiny-model --backend NAME`` writes, in words
    tiny_description: str
    #: the implementing class, ``module:Class`` under this package
    implementation: str


BACKEND_FACTS: dict[str, BackendFacts] = {
    "blip": BackendFacts(
        name="blip",
        model_type="blip",
        has_faithful_reference=True,
        defaults=Defaults(layer=8, head=9, threshold=0.15,
                          chosen_by="the authors' released setting (--layer 8 --head 9 --threshold 0.15)"),
        tiny_description="tiny random BLIP ITM (BERT WordPiece tokenizer with [DEC]/[ENC])",
        implementation="blip:BlipBackend",
    ),
    "bridgetower": BackendFacts(
        name="bridgetower",
        model_type="bridgetower",
        has_faithful_reference=False,
        defaults=Defaults(
            layer=4,
            head=0,
            threshold=0.15,
            chosen_by=(
                "provisional: the middle of the 6 cross-modal text layers (BLIP's layer 8 of 12 is in the upper "
                "middle too), head 0, BLIP's threshold; to be replaced by the annotation-free search (issue #11)"
            ),
        ),
        tiny_description="tiny random BridgeTower ITM (RoBERTa byte-level BPE tokenizer, CLIP image processor)",
        implementation="bridgetower:BridgeTowerBackend",
    ),
}
#: the config's choices (``auto`` resolved by :func:`resolve_backend_name`)
CHOICES = ("auto",) + tuple(BACKEND_FACTS)

__all__ = ["BACKEND_FACTS", "CHOICES", "BackendFacts", "Defaults", "backend_facts", "get_backend",
           "resolve_backend_name", "load_model"]


def backend_facts(name: str) -> BackendFacts:
    try:
        return BACKEND_FACTS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(CHOICES)}") from None


@functools.lru_cache(maxsize=None)
def get_backend(name: str):
    """The backend's implementation (a :class:`~pnp_ovss.backends.base.Backend`; imports torch)."""
    module, _, cls = backend_facts(name).implementation.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)()


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
        backend_facts(requested)
        return requested
    kind = _model_type(model)
    by_type = {b.model_type: b.name for b in BACKEND_FACTS.values()}
    if kind is not None:
        if kind in by_type:
            return by_type[kind]
        raise ConfigError(
            f"gradcam.backend=auto: {model} is a {kind!r} checkpoint, which no backend runs "
            f"(backends: {', '.join(BACKEND_FACTS)})"
        )
    lowered = str(model).lower()
    named = [name for name in BACKEND_FACTS if name in lowered]
    if len(named) == 1:
        return named[0]
    raise ConfigError(
        f"gradcam.backend=auto cannot tell which backend runs {model} (no config.json at hand offline); "
        f"set gradcam.backend to one of {', '.join(BACKEND_FACTS)}"
    )


def load_model(backend: str, model: str, image_size: int, device: str):
    """Load ``model`` with the backend ``backend`` (``auto`` resolved): a
    :class:`~pnp_ovss.backends.base.LoadedModel`."""
    return get_backend(resolve_backend_name(backend, str(model))).load(str(model), image_size, device)

"""What can be known about a checkpoint without loading it (no torch): its files in a local directory or the
Hugging Face cache, its ``config.json`` (cross-attention layers and heads, patch size, model family), the
caption limit of its backend, the class names its tokenizer does not know, and whether the Hub can provide it
(one short probe, no retries).

The parse-time checks (:mod:`pnp_ovss.checks`, ``pnp-ovss segment``) and the backends' loaders share these
facts, so the parse refuses exactly what the job would.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..vocab import caption_word
from . import backend_facts

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
#: the released code's max_txt_len: BLIP captions are truncated (and the straightforward path padded) to it
MAX_TEXT_LEN = 500
#: RoBERTa's positions (BridgeTower's text encoder): captions are truncated to this many tokens at most
ROBERTA_MAX_TEXT_LEN = 512
#: seconds the Hub probe waits for an answer
PROBE_TIMEOUT = 3.0
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def looks_like_hub_id(model: str) -> bool:
    """``org/name`` (as every BLIP checkpoint on the Hub) and not an existing path."""
    return bool(HUB_ID.match(str(model))) and not _exists(Path(str(model)).expanduser())


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name no file system takes (too long, NUL): not a path
        return False


def cached_file(model: str, name: str) -> Path | None:
    """``name`` of the Hub checkpoint ``model`` in the Hugging Face cache, or None (not cached, or no cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(model), name)
    except Exception:  # noqa: BLE001 - an id the cache cannot hold: nothing cached
        return None
    return Path(found) if isinstance(found, str) else None


def checkpoint_file(model: str, name: str) -> Path | None:
    """``name`` of a checkpoint: in its local directory, else in the Hugging Face cache; None when absent."""
    local = Path(str(model)).expanduser() / name
    try:
        if local.is_file():
            return local
    except (OSError, ValueError):
        return None
    return cached_file(model, name) if looks_like_hub_id(model) else None


def read_checkpoint_config(model: str) -> tuple[dict, Path] | None:
    """The checkpoint's config.json as a dict and where it was read from; None when it is not at hand offline
    (or unreadable: the job that loads the model says why)."""
    path = checkpoint_file(model, "config.json")
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except (OSError, ValueError):
        return None


#: where config.json keeps the cross-attention layers and heads per ``model_type``, with the config classes'
#: defaults for keys a checkpoint leaves out (save_pretrained writes only what differs from them)
CROSS_ATTENTION_LAYOUT = {
    # BLIP: the text encoder's layers cross-attend to the image (BlipTextConfig: 12 layers, 8 heads)
    "blip": {"layers": (("text_config", "num_hidden_layers"), 12), "heads": (("text_config", "num_attention_heads"), 8)},
    # BridgeTower: the cross-modal text layers (BridgeTowerConfig 6, BridgeTowerTextConfig 12 heads)
    "bridgetower": {"layers": (("num_hidden_layers",), 6), "heads": (("text_config", "num_attention_heads"), 12)},
}


def _lookup(config: dict, keys: tuple[str, ...], default: int) -> int:
    node = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return default
    return int(node)


def cross_attention_layers_heads(config: dict, backend: str) -> tuple[int, int] | None:
    """(layers, heads) of the cross-attention GradCAM reads (1-based layers, 0-based heads), from a config.json
    dict; None for a backend whose layout is not known here."""
    layout = CROSS_ATTENTION_LAYOUT.get(backend)
    if layout is None:
        return None
    return _lookup(config, *layout["layers"]), _lookup(config, *layout["heads"])


def caption_token_limit(backend: str, tokenizer) -> int:
    """The most tokens (special tokens included) a caption may have: BLIP truncates at the released max_txt_len
    (:data:`MAX_TEXT_LEN`), BridgeTower at its tokenizer's ``model_max_length``, at most RoBERTa's 512."""
    if backend == "bridgetower":
        return min(int(getattr(tokenizer, "model_max_length", None) or ROBERTA_MAX_TEXT_LEN), ROBERTA_MAX_TEXT_LEN)
    return MAX_TEXT_LEN


def local_tokenizer(model: str):
    """The checkpoint's tokenizer from its local directory or the Hugging Face cache, or None (not at hand)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    except Exception:  # noqa: BLE001 - no tokenizer files at hand: nothing to count with
        return None


# --- availability of a Hub checkpoint -------------------------------------------------------------


def offline_variable(environ=None) -> str | None:
    """``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE``) as set, or None when neither forbids downloads."""
    environ = os.environ if environ is None else environ
    for name in OFFLINE_VARIABLES:
        value = str(environ.get(name, "")).strip()
        if value.upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name}={value}"
    return None


def is_cached(model: str) -> bool:
    """Whether the Hugging Face cache holds the Hub checkpoint's config.json and its weights."""
    return cached_file(model, "config.json") is not None and any(cached_file(model, w) for w in WEIGHT_FILES)


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def weight_bytes(files: list[tuple[str, int | None]]) -> int | None:
    """Bytes of the weights a download fetches: the safetensors files if there are any, else the .bin files;
    None when the sizes are unknown."""
    for suffix in (".safetensors", ".bin"):
        sizes = [size for name, size in files if name.endswith(suffix)]
        if sizes:
            return None if any(s is None for s in sizes) else int(sum(sizes))
    return None


def human_bytes(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


@dataclass(frozen=True)
class HubProbe:
    """One answer of the Hub about a checkpoint: reachable with the weights' size, or the error."""

    reachable: bool
    weight_bytes: int | None = None
    error: str = ""


def probe_hub(model: str, timeout: float = PROBE_TIMEOUT) -> HubProbe:
    """One request for the checkpoint's file list with sizes (``model_info(files_metadata=True)``), no retries."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(str(model), files_metadata=True, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means: the Hub cannot provide it now
        first = str(exc).splitlines()[0] if str(exc) else ""
        return HubProbe(False, error=f"{type(exc).__name__}: {first}"[:300])
    files = [(s.rfilename, s.size) for s in (info.siblings or [])]
    return HubProbe(True, weight_bytes(files))


@dataclass(frozen=True)
class Availability:
    """Whether the jobs can load a checkpoint: ``problem`` (they cannot; what to do) or ``note`` (what will
    happen first, e.g. a download), or neither (a local directory, or already cached)."""

    problem: str | None = None
    note: str | None = None


def model_availability(model: str, key: str = "gradcam.model", environ=None, probe=probe_hub) -> Availability:
    """A Hub id neither in the cache nor downloadable is a problem: with an offline flag at once, else after one
    short probe of the Hub; a downloadable one gives a note with the size of its weights."""
    if not looks_like_hub_id(model) or is_cached(model):
        return Availability()
    cache = hub_cache_dir()
    fix = (f"download it once where the Hub can be reached (`hf download {model}`, into this cache or one that "
           f"HF_HOME points at), or point {key} at a local checkpoint directory")
    offline = offline_variable(environ)
    if offline:
        return Availability(problem=(
            f"{key} {model} is not in the Hugging Face cache ({cache}) and {offline} forbids downloading it: {fix}"
        ))
    answer = probe(model)
    if not answer.reachable:
        return Availability(problem=(
            f"{key} {model} is not in the Hugging Face cache ({cache}) and the Hub ({hub_endpoint()}) cannot be "
            f"reached ({answer.error}): {fix}"
        ))
    size = human_bytes(answer.weight_bytes) if answer.weight_bytes is not None else "size unknown"
    return Availability(note=(
        f"{key} {model} is not in the Hugging Face cache ({cache}): the first job that needs it downloads it from "
        f"{hub_endpoint()} ({size} of weights)"
    ))


def check_model_choice(model: str, image_size: int, backend: str = "blip") -> int | None:
    """Parse-time check of ``gradcam.model`` and ``gradcam.image_size`` without loading anything: a local
    directory must exist and hold a checkpoint (config.json and weights) of the ``backend``'s model family;
    the image size must be a multiple of the checkpoint's patch size, read from its config.json (local, or
    already in the Hugging Face cache). Returns the patch size when it could be read."""
    path = Path(str(model)).expanduser()
    config_file = None
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelError(
                f"{path}: gradcam.model is a local directory without config.json; expected a checkpoint saved "
                f"with save_pretrained ({backend}), or write a test model with "
                f"`pnp-ovss tiny-model --backend {backend} {model}`"
            )
        if not any((path / name).is_file() for name in WEIGHT_FILES):
            raise ModelError(f"{path}: gradcam.model holds no weights ({' or '.join(WEIGHT_FILES[::2])})")
    elif path.exists():
        raise ModelError(f"{path}: gradcam.model is a file; expected a checkpoint directory or a Hub id")
    elif not looks_like_hub_id(str(model)):
        raise ModelError(
            f"{model}: gradcam.model is not an existing directory (looked in {path.absolute()}) nor a Hugging Face "
            f"id like Salesforce/blip-itm-large-flickr; check the path, or write a test model there with "
            f"`pnp-ovss tiny-model {model}`"
        )
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(model), "config.json")
            config_file = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - no cache information: the job checks when it loads the model
            config_file = None
    if config_file is None:
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        patch = int((config.get("vision_config") or {}).get("patch_size", 16))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{config_file}: unreadable model config ({exc})") from None
    expected = backend_facts(backend).model_type
    kind = config.get("model_type")
    if kind and kind != expected:
        raise ModelError(
            f"{model}: gradcam.model is a {kind!r} checkpoint but gradcam.backend is {backend!r} "
            f"(which runs {expected!r} checkpoints); set gradcam.backend to auto or to the model's backend"
        )
    if image_size % patch:
        nearest = max(patch, round(image_size / patch) * patch)
        raise ModelError(
            f"gradcam.image_size {image_size} is not a multiple of the patch size {patch} of {model}; "
            f"use e.g. {nearest}"
        )
    return patch


def unknown_piece_warnings(model: str, names: list[str], keep_spaces: bool = False) -> list[str]:
    """One warning per class name that the model's tokenizer turns (partly) into its unknown token, saying
    what the model will see. Reads the tokenizer from a local checkpoint or the Hugging Face cache only;
    returns nothing when it is not available offline."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    except Exception:  # noqa: BLE001 - no tokenizer at hand: nothing to check before the job
        return []
    unk = tokenizer.unk_token
    out = []
    for name in names:
        pieces = tokenizer.tokenize(caption_word(name, keep_spaces))
        if unk in pieces:
            what = "every word piece" if all(p == unk for p in pieces) else "part of it"
            out.append(
                f"class {name!r}: {what} is unknown to the tokenizer of {model}; the model sees "
                f"{' '.join(pieces)!r}, which cannot be told apart from other unknown words — name the class in "
                f"words the tokenizer knows (the BLIP tokenizer: English, Latin letters)"
            )
    return out

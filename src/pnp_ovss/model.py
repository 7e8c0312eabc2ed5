"""Loading BLIP ITM through transformers, and a tiny random BLIP for tests (DESIGN.md "Model").

Nothing here downloads at import time. ``load_blip`` reads a local directory or the Hugging Face cache
(it downloads only when the Hub is reachable and ``HF_HUB_OFFLINE`` is not set); a model that cannot be
found is a :class:`ModelError` naming the model id and ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .checkpoints import HUB_ID, WEIGHT_FILES, looks_like_hub_id  # noqa: F401 (re-exported)
from .errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Salesforce/blip-itm-large-flickr"
#: LayerNorm eps of the authors' ViT (timm-style 1e-6) and BERT text encoder (1e-12) (DESIGN.md "Model")
AUTHORS_VISION_LN_EPS = 1e-6
AUTHORS_TEXT_LN_EPS = 1e-12
ENC_TOKEN = "[ENC]"
DEC_TOKEN = "[DEC]"


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but no CUDA GPU is available (use device: auto or cpu)")
    return torch.device(device)


def _offline_hint(model_id: str, exc: Exception) -> ModelError:
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
    from .backends import get_backend

    expected = get_backend(backend).model_type
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
    from .gradcam import CLIP_MEAN, CLIP_STD

    cfg = read_processor_config(model_id)
    try:
        return tuple(float(v) for v in cfg.get("image_mean", CLIP_MEAN)), tuple(float(v) for v in cfg.get("image_std", CLIP_STD))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{model_id}: image_mean/image_std in its processor config are not numbers ({exc})") from None


def unknown_piece_warnings(model: str, names: list[str], keep_spaces: bool = False) -> list[str]:
    """One warning per class name that the model's tokenizer turns (partly) into its unknown token, saying
    what the model will see. Reads the tokenizer from a local checkpoint or the Hugging Face cache only;
    returns nothing when it is not available offline."""
    from .vocab import caption_word

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


def _is_local(model_id_or_dir) -> bool:
    return Path(str(model_id_or_dir)).expanduser().is_dir()


def load_config_with_authors_eps(model_id_or_dir: str):
    """The checkpoint's BlipConfig with LayerNorm eps set to the authors' values (changes are logged)."""
    from transformers import BlipConfig

    try:
        config = BlipConfig.from_pretrained(str(model_id_or_dir))
    except (OSError, ValueError) as exc:
        raise _offline_hint(str(model_id_or_dir), exc) from None
    for part, eps in (("vision_config", AUTHORS_VISION_LN_EPS), ("text_config", AUTHORS_TEXT_LN_EPS)):
        sub = getattr(config, part)
        if sub.layer_norm_eps != eps:
            log.info("%s.layer_norm_eps: checkpoint config %g -> %g (the authors' value)", part, sub.layer_norm_eps, eps)
            sub.layer_norm_eps = eps
        else:
            log.info("%s.layer_norm_eps = %g (the authors' value)", part, eps)
    return config


def ensure_enc_token(tokenizer, vocab_size: int) -> int:
    """The id of ``[ENC]``, the token BLIP's ITM puts in place of ``[CLS]`` (ALGORITHM.md §4.2).

    The authors' tokenizer is ``bert-base-uncased`` + ``[DEC]`` (bos) + ``[ENC]`` (ids 30522, 30523). A
    tokenizer lacking them gets them added in that order, exactly as BLIP's ``init_tokenizer`` does.
    transformers' ``BlipForImageTextRetrieval`` itself feeds ``input_ids`` unchanged (it keeps [CLS]), so
    the substitution is done by :func:`pnp_ovss.gradcam.tokenize_captions`.
    """
    unk = tokenizer.unk_token_id

    def known(tok):
        i = tokenizer.convert_tokens_to_ids(tok)
        return i is not None and i != unk

    if not known(ENC_TOKEN):
        if not known(DEC_TOKEN):
            tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
        tokenizer.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
        log.info("tokenizer: added %s/%s as BLIP's init_tokenizer does", DEC_TOKEN, ENC_TOKEN)
    enc = int(tokenizer.convert_tokens_to_ids(ENC_TOKEN))
    if enc >= vocab_size:
        raise ModelError(f"tokenizer's {ENC_TOKEN} id {enc} is outside the text model's vocabulary ({vocab_size})")
    return enc


def enc_token_id(tokenizer) -> int:
    return int(tokenizer.convert_tokens_to_ids(ENC_TOKEN))


def check_image_size(config, image_size: int) -> int:
    """S must be a multiple of the patch size; returns the patch grid P = S / patch."""
    patch = int(config.vision_config.patch_size)
    if image_size % patch:
        raise ModelError(f"image_size {image_size} is not a multiple of the patch size {patch}")
    return image_size // patch


def layer_norm_eps_in_use(model) -> dict[str, set[float]]:
    """The eps of every LayerNorm of the vision and text towers (to log and to test)."""
    out = {"vision": set(), "text": set()}
    for name, tower in (("vision", model.vision_model), ("text", model.text_encoder)):
        for m in tower.modules():
            if isinstance(m, torch.nn.LayerNorm):
                out[name].add(float(m.eps))
    return out


def load_blip(model_id_or_dir: str = DEFAULT_MODEL, image_size: int = 336, device: str = "cpu"):
    """Load ``BlipForImageTextRetrieval`` + its BERT tokenizer, frozen, in eval mode, on ``device``.

    Returns ``(model, tokenizer)``. The position embeddings stay at the checkpoint's grid; the forward pass
    interpolates them to ``image_size`` (transformers' ``interpolate_pos_encoding``, bicubic,
    align_corners=False, as ALGORITHM.md §3). The model's ``name_or_path`` and ``pnp_revision`` (the Hub
    commit, or None for a local directory) are recorded for the store attributes.
    """
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    model_id = str(model_id_or_dir)
    config = load_config_with_authors_eps(model_id)
    grid = check_image_size(config, image_size)
    dev = resolve_device(device)
    try:
        model = BlipForImageTextRetrieval.from_pretrained(model_id, config=config)
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise _offline_hint(model_id, exc) from None
    ensure_enc_token(tokenizer, config.text_config.vocab_size)
    eps = layer_norm_eps_in_use(model)
    log.info("LayerNorm eps in use: vision %s, text %s", sorted(eps["vision"]), sorted(eps["text"]))
    trained = config.vision_config.image_size // config.vision_config.patch_size
    if trained != grid:
        log.info("position embeddings interpolated %dx%d -> %dx%d (bicubic, align_corners=False)", trained, trained, grid, grid)
    model.eval()
    model.requires_grad_(False)
    model.to(dev)
    model.pnp_revision = getattr(config, "_commit_hash", None)
    return model, tokenizer


# --------------------------------------------------------------------------------------------------
# tiny random BLIP for tests and offline runs

#: BERT's special-token layout ([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103), then words;
#: [DEC] and [ENC] last, as in BLIP's vocabulary (30522, 30523).
TINY_WORDS = (
    "a picture of the and in on with "
    # VOC and common class words, some whole, some split into ## pieces below
    "aeroplane bicycle bird boat bottle bus car cat chair cow table dog horse motorbike person sheep sofa train "
    "wall building sky floor tree ceiling road bed grass door plant mountain water window sea house field "
    "pot potted monitor tv screen light traffic fire hydrant stop sign cup fork knife spoon bowl book clock"
).split()
TINY_PIECES = "##ted ##plant ##monitor ##s ##er ##ing ##ed ##ly ##light ##board ##ball ##glass ##pane".split()
TINY_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def tiny_vocab() -> list[str]:
    specials = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = []
    for w in TINY_WORDS + TINY_LETTERS + ["##" + c for c in TINY_LETTERS] + TINY_PIECES + list(",.'-/()&"):
        if w not in words and w not in specials:
            words.append(w)
    for d in "0123456789":
        words.append(d)
    return specials + words + [DEC_TOKEN, ENC_TOKEN]


def tiny_config(vocab_size: int, bos_token_id: int):
    """A small BlipConfig with the real model's text depth/heads (12 × 12, so layer 8 / head 9 exist),
    a 2-block ViT trained at 384 px (24×24 grid → interpolated at 336) and the Hub's vision eps 1e-5."""
    from transformers import BlipConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=512,
        pad_token_id=0,
        sep_token_id=102,
        bos_token_id=bos_token_id,
        initializer_range=0.2,
        layer_norm_eps=1e-12,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=384,
        patch_size=16,
        initializer_range=0.2,
        layer_norm_eps=1e-5,
    )
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=16, projection_dim=16)


def write_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Build a tiny randomly initialised BLIP ITM with a small local WordPiece vocabulary and save model and
    tokenizer with ``save_pretrained`` so that :func:`load_blip` loads it like a real checkpoint."""
    from transformers import BertTokenizer, BlipForImageTextRetrieval

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    ids = {w: i for i, w in enumerate(vocab)}
    tokenizer = BertTokenizer(
        vocab=ids, do_lower_case=True, bos_token=DEC_TOKEN, additional_special_tokens=[ENC_TOKEN]
    )
    config = tiny_config(len(vocab), ids[DEC_TOKEN])
    torch.manual_seed(seed)
    model = BlipForImageTextRetrieval(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "README.md").write_text(
        "Tiny randomly initialised BLIP ITM written by `pnp-ovss tiny-model` for offline tests.\n"
        "Its maps are meaningless; use it to exercise the workflow without downloading weights.\n",
        encoding="utf-8",
    )
    return directory


# --------------------------------------------------------------------------------------------------
# CLI


def _cmd_tiny_model(args) -> int:
    from .backends import get_backend

    if args.clip:
        from .search.clip import write_tiny_clip

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
    from .backends import BACKENDS

    p = subparsers.add_parser(
        "tiny-model",
        help="write a tiny random ITM checkpoint (for offline tests: --config 'gradcam={model: DIR}')",
        description="Write a tiny randomly initialised ITM model of a backend with its tokenizer (and image "
        "processor) files to DIR, loadable like the real checkpoint (no download).",
    )
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--backend", choices=list(BACKENDS), default="blip", help="model family (default: blip)")
    p.add_argument("--clip", action="store_true", help="write a tiny random CLIP (the search's scorer) instead")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_tiny_model)

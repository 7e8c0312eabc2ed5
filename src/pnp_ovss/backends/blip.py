"""BLIP ITM (the released model) behind the backend interface: loading with the authors' LayerNorm eps and the
``[ENC]`` token, the caption tokens, the cross-attention probabilities and their gradients, and a tiny random
BLIP for tests (ALGORITHM.md §3, §4).

Nothing here downloads at import time. :func:`load_blip` reads a local directory or the Hugging Face cache (it
downloads only when the Hub is reachable and ``HF_HUB_OFFLINE`` is not set); a model that cannot be found is a
:class:`~pnp_ovss.errors.ModelError` naming the model id and ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path

import torch

from ..errors import ModelError
from ..gradcam import (
    PREFIX_ROWS,
    CaptionTokens,
    ImageGradcam,
    autocast_context,
    backend_gradcam_batch,
    preprocess_image,
)
from ..vocab import CAPTION_PREFIX, caption_for, caption_word
from . import BACKEND_FACTS
from .base import Backend, LoadedModel, kept_probabilities, match_gradients
from .checkpoints import MAX_TEXT_LEN
from .loading import offline_hint, resolve_device, straight_to

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Salesforce/blip-itm-large-flickr"


#: LayerNorm eps of the authors' ViT (timm-style 1e-6) and BERT text encoder (1e-12); the Hub's configs may say
#: otherwise (the vision config says 1e-5), and :func:`load_config_with_authors_eps` sets them back to these
AUTHORS_VISION_LN_EPS = 1e-6


AUTHORS_TEXT_LN_EPS = 1e-12


ENC_TOKEN = "[ENC]"


DEC_TOKEN = "[DEC]"


def load_config_with_authors_eps(model_id_or_dir: str):
    """The checkpoint's BlipConfig with LayerNorm eps set to the authors' values (changes are logged)."""
    from transformers import BlipConfig

    try:
        config = BlipConfig.from_pretrained(str(model_id_or_dir))
    except (OSError, ValueError) as exc:
        raise offline_hint(str(model_id_or_dir), exc) from None
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
    the substitution is done by :func:`tokenize_captions`.
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
        model = BlipForImageTextRetrieval.from_pretrained(model_id, config=config, **straight_to(dev))
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise offline_hint(model_id, exc) from None
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
# captions, probabilities and gradients (§4)


def class_piece_counts(tokenizer, names: list[str], keep_spaces: bool = False) -> list[int]:
    """Word pieces of each class name as it appears in the caption (spaces/hyphens removed).

    The caption is whitespace-separated, so its pieces are the concatenation of each word's pieces. For the
    benchmark vocabularies each name is one word (a leading piece + ``##`` pieces), which is what the released
    walk over ``##`` pieces (§4.5) assumes; counting per name gives the same grouping and stays right for
    user class names with punctuation.
    """
    counts = [len(tokenizer.tokenize(caption_word(n, keep_spaces))) for n in names]
    for n, c in zip(names, counts):
        if c == 0:
            raise ValueError(f"class name {n!r} gives no word pieces")
    return counts


def tokenize_captions(
    tokenizer, class_names: list[list[str]], pad_to: int | None = None, keep_spaces: bool = False
) -> CaptionTokens:
    """One caption per image, ``"A picture of " + names``; padded to the batch's longest (``pad_to=None``)
    or to ``pad_to`` tokens; token 0 ([CLS]) replaced by [ENC] as BLIP's ITM does."""
    if any(len(n) == 0 for n in class_names):
        raise ValueError("every image needs at least one class for its caption")
    captions = [caption_for(n, keep_spaces) for n in class_names]
    if pad_to is None:
        enc = tokenizer(captions, padding="longest", truncation=True, max_length=MAX_TEXT_LEN, return_tensors="pt")
    else:
        enc = tokenizer(captions, padding="max_length", truncation=True, max_length=pad_to, return_tensors="pt")
    prefix = len(tokenizer.tokenize(CAPTION_PREFIX.strip()))
    if prefix != PREFIX_ROWS:
        raise ValueError(f"the tokenizer splits {CAPTION_PREFIX.strip()!r} into {prefix} pieces, expected {PREFIX_ROWS}")
    counts = [class_piece_counts(tokenizer, names, keep_spaces) for names in class_names]
    lengths = enc["attention_mask"].sum(1).tolist()
    for cap, c, n in zip(captions, counts, lengths):
        if n != 1 + PREFIX_ROWS + sum(c) + 1:
            raise ValueError(f"caption {cap!r}: {n} tokens after truncation, expected {1 + PREFIX_ROWS + sum(c) + 1}")
    ids = enc["input_ids"].clone()
    ids[:, 0] = enc_token_id(tokenizer)
    return CaptionTokens(ids, enc["attention_mask"].long(), counts, captions)


def check_text_layer_head(model, layer: int, head: int) -> None:
    cfg = model.config.text_config
    if not 1 <= layer <= cfg.num_hidden_layers:
        raise ValueError(f"layer {layer} out of range: the text encoder has layers 1..{cfg.num_hidden_layers} (1-based)")
    if not 0 <= head < cfg.num_attention_heads:
        raise ValueError(f"head {head} out of range: heads are 0..{cfg.num_attention_heads - 1} (0-based)")


def text_self_attention_mask(model, embeds: torch.Tensor, attention_mask: torch.Tensor):
    """The text self-attention mask exactly as transformers' ``BlipTextModel`` builds it (bidirectional)."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(
        config=model.text_encoder.config, inputs_embeds=embeds, attention_mask=attention_mask
    )


def blip_probs_and_grads(model, pixel_values, tokens, layers: list[int], autocast: str):
    """One forward/backward of BLIP ITM: the ViT and the text layers below ``min(layers)`` without gradient,
    the graph from the input of the lowest listed layer, the cross-attention probabilities of every listed
    layer taken with forward hooks, and their gradients from one ``autograd.grad`` of ``J = Σ_b logit[b, 1]``.
    Returns ``[(probs, grad)]`` in the order of ``layers`` (each [B, heads, L, 1+P²])."""
    text = model.text_encoder
    blocks = text.encoder.layer
    lowest = min(layers)
    with autocast_context(pixel_values.device, autocast):
        with torch.no_grad():
            image_embeds = model.vision_model(
                pixel_values=pixel_values, interpolate_pos_encoding=True
            ).last_hidden_state
            hidden = text.embeddings(input_ids=tokens.input_ids)
            mask = text_self_attention_mask(model, hidden, tokens.attention_mask)
            for block in blocks[: lowest - 1]:
                hidden = block(hidden, image_embeds, attention_mask=mask)
        with kept_probabilities({layer: blocks[layer - 1].crossattention.self for layer in layers}) as kept:
            with torch.enable_grad():
                hidden = hidden.detach().requires_grad_(True)
                for block in blocks[lowest - 1 :]:
                    hidden = block(hidden, image_embeds, attention_mask=mask)
                return match_gradients(model.itm_head(hidden[:, 0, :]), kept, layers)


class BlipBackend(Backend):
    facts = BACKEND_FACTS["blip"]

    def load(self, model_id: str, image_size: int, device: str) -> LoadedModel:
        model, tokenizer = load_blip(model_id, image_size=image_size, device=device)
        return LoadedModel(self, model, tokenizer)

    def layers_heads(self, model) -> tuple[int, int]:
        cfg = model.config.text_config
        return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)

    def check_layer_head(self, model, layer: int, head: int) -> None:
        check_text_layer_head(model, layer, head)

    def patch_size(self, model) -> int:
        return int(model.config.vision_config.patch_size)

    def preprocess(self, image, size: int, released_ade: bool = False, model=None) -> torch.Tensor:
        return preprocess_image(image, size, released_ade)

    def tokenize(self, tokenizer, class_names, keep_spaces: bool = False, pad_to: int | None = None):
        return tokenize_captions(tokenizer, class_names, pad_to=pad_to, keep_spaces=keep_spaces)

    def probs_and_grads(self, model, pixel_values, tokens, layers, autocast: str = "none"):
        return blip_probs_and_grads(model, pixel_values, tokens, layers, autocast)

    def cross_attention_modules(self, model) -> list:
        return [block.crossattention.self for block in model.text_encoder.encoder.layer]

    def match_logits(self, model, pixel_values, tokens) -> torch.Tensor:
        """``BlipForImageTextRetrieval`` forward with the ITM head (through the ViT too)."""
        return model(
            input_ids=tokens.input_ids,
            pixel_values=pixel_values,
            attention_mask=tokens.attention_mask,
            use_itm_head=True,
            interpolate_pos_encoding=True,
        ).itm_score

    def use_fused_vision_attention(self, model) -> str:
        layers = model.vision_model.encoder.layers
        for layer in layers:
            layer.self_attn.forward = types.MethodType(_sdpa_self_attention, layer.self_attn)
        return f"blip: the {len(layers)} self-attention layers of the vision tower use torch SDPA"

    def write_tiny(self, directory, seed: int = 0) -> Path:
        return write_tiny_model(directory, seed=seed)


#: the BLIP backend (stateless)
BLIP = BlipBackend()


def fast_token_maps(
    model, pixel_values: torch.Tensor, tokens: CaptionTokens, layer: int, head: int, autocast: str = "none"
) -> torch.Tensor:
    """GradCAM token maps of text layer ``layer`` (1-based), head ``head``: float32 [B, L-1, P, P] on the
    model's device, L = the captions' padded length.

    Output-preserving shortcuts (:func:`blip_probs_and_grads` of that layer alone): the ViT and text layers
    < L run without gradient; the graph starts at the input of layer L, so the backward of
    ``J = Σ_b logit[b, 1]`` runs only through text layers ≥ L (the cross-attention keys/values of the image
    are constants); the attention probabilities of layer L are taken with a forward hook and only head H is
    kept. (The BLIP backend's ``token_maps``.)
    """
    return BLIP.token_maps(model, pixel_values, tokens, layer, head, autocast)


def gradcam_batch(model, tokenizer, pixel_values: torch.Tensor, class_names: list[list[str]], params: dict) -> list[ImageGradcam]:
    """:func:`~pnp_ovss.gradcam.backend_gradcam_batch` with the BLIP backend (the released model)."""
    return backend_gradcam_batch(BLIP, model, tokenizer, pixel_values, class_names, params)


def _sdpa_self_attention(self, hidden_states: torch.Tensor, **kwargs):
    """``BlipAttention.forward`` through ``scaled_dot_product_attention``: the same projections, the same
    scale (head_dim ** -0.5, SDPA's default), no mask; dropout only in training (the model is frozen in eval).
    The attention weights are not formed (None is returned in their place: nothing reads them)."""
    bsz, tgt_len, embed_dim = hidden_states.size()
    qkv = self.qkv(hidden_states).reshape(bsz, tgt_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    context = torch.nn.functional.scaled_dot_product_attention(
        qkv[0], qkv[1], qkv[2], dropout_p=self.dropout.p if self.training else 0.0, scale=self.scale)
    context = context.permute(0, 2, 1, 3).reshape(bsz, tgt_len, self.embed_dim)
    return self.projection(context), None


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

    text = dict(vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=512, pad_token_id=0, sep_token_id=102,
                bos_token_id=bos_token_id, initializer_range=0.2, layer_norm_eps=1e-12)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=384,
                  patch_size=16, initializer_range=0.2, layer_norm_eps=1e-5)
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

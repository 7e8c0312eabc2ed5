"""BridgeTower ITM (``BridgeTowerForImageAndTextRetrieval``) behind the backend interface.

BridgeTower runs a uni-modal RoBERTa text encoder and a CLIP ViT side by side, then a cross-modal encoder
of N layer pairs joined to the top uni-modal layers by bridge ("link tower") layers. Its cross-modal *text*
layers attend from the caption tokens to the image tokens (CLS + P² patches): that cross-attention, with the
gradient of the ITM "match" logit, gives the GradCAM token maps exactly as BLIP's text cross-attention does
(ALGORITHM.md §4.4). ``layer`` is 1..N over the cross-modal text layers; ``head`` 0-based.

Captions are RoBERTa byte-level BPE: ``<s> A Ġpicture Ġof Ġcat Ġpot ted Ġplant </s>``. Row 0 (``<s>``, the
token the pooler reads, as BLIP's [ENC]) is dropped with the image's CLS column; the class pieces of each
name are found from the tokenizer's character offsets, so a name split into several BPE pieces, or a name
with spaces (``potted plant``), gets exactly its own tokens.

BridgeTower has no released PnP-OVSS code, so the BLIP-code quirks (§10.4, §10.7, §1.2) do not apply: it
runs the clean rules (:func:`pnp_ovss.config.resolve_fixes`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from PIL import Image

from ..errors import ModelError
from ..gradcam import CLIP_MEAN, CLIP_STD, CaptionTokens, autocast_context, preprocess_image
from ..vocab import CAPTION_PREFIX, caption_word
from . import BACKEND_FACTS
from .base import Backend, LoadedModel, kept_probabilities, match_gradients
from .blip import TINY_WORDS
from .checkpoints import caption_token_limit
from .loading import image_stats, offline_hint, resolve_device, straight_to

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..3, <mask> last


def caption_segments(names: list[str], keep_spaces: bool) -> tuple[str, list[tuple[int, int]]]:
    """The caption and the character span of the prefix and of each class name in it."""

    words = [caption_word(n, keep_spaces) for n in names]
    spans = [(0, len(CAPTION_PREFIX.rstrip()))]
    start = len(CAPTION_PREFIX)
    for w in words:
        spans.append((start, start + len(w)))
        start += len(w) + 1
    return CAPTION_PREFIX + " ".join(words), spans


def segment_counts(offsets: list[tuple[int, int]], special: list[bool], spans: list[tuple[int, int]], caption: str) -> list[int]:
    """Tokens per segment (prefix, then each class) from the tokenizer's character offsets.

    A token belongs to the segment holding its last character, where a segment also owns the space before
    it (byte-level BPE glues the space to the next word: ``Ġcat``). Tokens must come segment by segment, in
    order, each segment with at least one token."""
    counts = [0] * len(spans)
    seen = -1
    for (s, e), is_special in zip(offsets, special):
        if is_special or e <= s:
            continue
        last = e - 1
        seg = next((k for k, (a, b) in enumerate(spans) if a - (1 if k else 0) <= last < b), None)
        if seg is None or seg < seen:
            raise ValueError(f"caption {caption!r}: token at characters {s}..{e} falls outside the class names")
        seen = seg
        counts[seg] += 1
    for k, c in enumerate(counts):
        if c == 0:
            raise ValueError(f"caption {caption!r}: segment {caption[spans[k][0]:spans[k][1]]!r} gives no tokens")
    return counts


class BridgeTowerBackend(Backend):
    facts = BACKEND_FACTS["bridgetower"]

    # -- loading -------------------------------------------------------------------------------------

    def use_fused_vision_attention(self, model) -> str:
        return ("bridgetower: the vision tower already runs fused attention (nn.MultiheadAttention without "
                "weights); nothing to change")

    def load(self, model_id: str, image_size: int, device: str) -> LoadedModel:
        from transformers import AutoTokenizer, BridgeTowerConfig, BridgeTowerForImageAndTextRetrieval


        model_id = str(model_id)
        try:
            config = BridgeTowerConfig.from_pretrained(model_id)
        except (OSError, ValueError) as exc:
            raise offline_hint(model_id, exc) from None
        patch = int(config.vision_config.patch_size)
        if image_size % patch:
            raise ModelError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        dev = resolve_device(device)
        try:
            model = BridgeTowerForImageAndTextRetrieval.from_pretrained(model_id, config=config, attn_implementation="eager",
                                                                        **straight_to(dev))
            tokenizer = AutoTokenizer.from_pretrained(model_id)
        except (OSError, ValueError) as exc:
            raise offline_hint(model_id, exc) from None
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"{model_id}: the BridgeTower backend needs a fast tokenizer (character offsets)")
        model.eval()
        model.requires_grad_(False)
        model.to(dev)
        model.pnp_revision = getattr(config, "_commit_hash", None)
        model.pnp_image_stats = image_stats(model_id)
        trained = config.vision_config.image_size // patch
        if trained != image_size // patch:
            log.info("position embeddings interpolated %dx%d -> %dx%d (bicubic)", trained, trained, image_size // patch, image_size // patch)
        return LoadedModel(self, model, tokenizer)

    def layers_heads(self, model) -> tuple[int, int]:
        return int(model.config.num_hidden_layers), int(model.config.text_config.num_attention_heads)

    def patch_size(self, model) -> int:
        return int(model.config.vision_config.patch_size)

    # -- inputs --------------------------------------------------------------------------------------

    def preprocess(self, image: Image.Image, size: int, released_ade: bool = False, model=None) -> torch.Tensor:
        """Bicubic squash to S×S (the whole image, as the maps must cover it; the checkpoint's processor
        would crop), [0, 1], the checkpoint's mean/std (OpenAI CLIP's). ``released_ade`` does not apply."""

        mean, std = getattr(model, "pnp_image_stats", None) or (CLIP_MEAN, CLIP_STD)
        return preprocess_image(image, size, False, mean, std)

    def tokenize(self, tokenizer, class_names, keep_spaces: bool = False, pad_to: int | None = None):

        if any(len(n) == 0 for n in class_names):
            raise ValueError("every image needs at least one class for its caption")
        built = [caption_segments(names, keep_spaces) for names in class_names]
        captions = [c for c, _ in built]
        limit = caption_token_limit(self.name, tokenizer)
        enc = tokenizer(
            captions, padding="longest" if pad_to is None else "max_length", truncation=True,
            max_length=pad_to or limit, return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt",
        )
        prefix = None
        counts = []
        for b, (caption, spans) in enumerate(built):
            n = int(enc["attention_mask"][b].sum())
            offsets = [tuple(int(v) for v in o) for o in enc["offset_mapping"][b][:n]]
            special = [bool(v) for v in enc["special_tokens_mask"][b][:n]]
            seg = segment_counts(offsets, special, spans, caption)
            if n != 1 + sum(seg) + 1:
                raise ValueError(f"caption {caption!r}: {n} tokens after truncation, expected {1 + sum(seg) + 1}")
            if prefix is None:
                prefix = seg[0]
            elif seg[0] != prefix:
                raise ValueError(f"caption {caption!r}: its prefix has {seg[0]} tokens, the batch's {prefix}")
            counts.append(seg[1:])
        return CaptionTokens(enc["input_ids"].clone(), enc["attention_mask"].long(), counts, captions, prefix)

    # -- GradCAM -------------------------------------------------------------------------------------

    def probs_and_grads(self, model, pixel_values, tokens, layers: list[int], autocast: str = "none"):
        """Output-preserving shortcuts: both uni-modal towers and the cross-modal layers below the lowest
        listed layer run without gradient; the graph starts at that layer's text input, so the backward of
        ``J = Σ_b logit[b, 1]`` runs only through the cross-modal layers above it; the probabilities of every
        listed layer's cross-attention are taken with forward hooks and their gradients come from one
        ``autograd.grad``. Returns ``[(probs, grad)]`` in the order of ``layers``."""
        from transformers.masking_utils import create_bidirectional_mask


        bt = model.bridgetower
        cfg = bt.config
        start = min(layers) - 1
        ids, mask = tokens.input_ids, tokens.attention_mask
        modules = {layer: bt.cross_modal_text_layers[layer - 1].crossattention.self for layer in layers}
        with kept_probabilities(modules) as kept:
            with autocast_context(pixel_values.device, autocast):
                with torch.no_grad():
                    text = bt.text_model.embeddings(input_ids=ids)
                    text_mask = create_bidirectional_mask(config=cfg, inputs_embeds=text[:, 0:1, :], attention_mask=mask)
                    split = len(bt.text_model.encoder.layer) - cfg.num_hidden_layers + 1
                    for block in bt.text_model.encoder.layer[:split]:
                        text = block(text, text_mask)
                    visual = bt.vision_model.visual
                    image = visual.forward_pre(pixel_values.type(bt.vision_model.dtype), interpolate_pos_encoding=True)
                    for block in visual.transformer.resblocks[:split]:
                        image = block(image)
                    image_ln = visual.forward_post(image.type(bt.vision_model.dtype))
                    text_in = bt._apply_text_transform(text, layer_idx=0)
                    text_type = bt.token_type_embeddings(torch.zeros(1, dtype=torch.long, device=ids.device)).expand_as(text_in)
                    text_in = bt.cross_modal_text_layernorm(text_in + text_type)
                    image_ln = bt._apply_image_transform(image_ln, layer_idx=0)
                    image_type = bt.token_type_embeddings(torch.full((1,), 1, dtype=torch.long, device=ids.device)).expand_as(image_ln)
                    image_in = bt.cross_modal_image_layernorm(image_ln + image_type)
                    # uni-modal layers feeding the bridges: constants of the backward
                    bridge_text, bridge_image = [], []
                    for i in range(split, len(bt.text_model.encoder.layer)):
                        text = bt.text_model.encoder.layer[i](text, text_mask)
                        image = visual.transformer.resblocks[i](image).type(bt.vision_model.dtype)
                        j = len(bridge_text) + 1
                        bridge_image.append(bt._apply_image_transform(visual.forward_post(image), j) + image_type)
                        bridge_text.append(bt._apply_text_transform(text, j) + text_type)
                text_out = image_out = None
                for j in range(cfg.num_hidden_layers):
                    with torch.set_grad_enabled(j >= start):
                        if j > 0:
                            text_in = bt.cross_modal_text_link_tower[j - 1](bridge_text[j - 1], text_out, text_mask)
                            image_in = bt.cross_modal_image_link_tower[j - 1](bridge_image[j - 1], image_out, None)
                        if j == start:
                            text_in = text_in.detach().requires_grad_(True)
                        text_out = bt.cross_modal_text_layers[j](text_in, image_in, attention_mask=text_mask)[0]
                        image_out = bt.cross_modal_image_layers[j](image_in, text_in, encoder_attention_mask=text_mask)[0]
                with torch.enable_grad():
                    return match_gradients(model.itm_score(bt.get_cls_features(text_out, image_out)), kept, layers)

    def cross_attention_modules(self, model) -> list:
        return [layer.crossattention.self for layer in model.bridgetower.cross_modal_text_layers]

    def match_logits(self, model, pixel_values, tokens) -> torch.Tensor:
        """``BridgeTowerForImageAndTextRetrieval`` forward as transformers runs it."""
        return model(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            pixel_values=pixel_values,
            interpolate_pos_encoding=True,
        ).logits

    # -- tiny checkpoint -----------------------------------------------------------------------------

    def write_tiny(self, directory, seed: int = 0) -> Path:
        return write_tiny_bridgetower(directory, seed)


#: the class lists the tiny BPE is trained on: fixed (not every shipped list), so that adding a dataset does not
#: change the tiny model, and with it the masks tests/unit/test_pins.py pins
TINY_CORPUS_VOCABULARIES = ("ade20k", "coco_object", "coco_stuff", "psc", "voc")


def tiny_corpus() -> list[str]:
    """Words the tiny BPE is trained on: the caption prefix and every class name of the five original benchmarks'
    vocabularies (so names split into a realistic few pieces), with and without a leading space."""
    from importlib import resources

    words = set(TINY_WORDS) | {"A", "picture", "of"}
    for name in TINY_CORPUS_VOCABULARIES:
        f = resources.files("pnp_ovss") / "data" / "classes" / f"{name}.txt"
        for line in f.read_text(encoding="utf-8").splitlines():
            words.update(line.replace("-", " ").split())
    return sorted(words)


def tiny_bpe_tokenizer():
    """A small RoBERTa byte-level BPE tokenizer (700 tokens, RoBERTa's special-token ids) trained here, offline
    and deterministically, on :func:`tiny_corpus`."""
    import tempfile

    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    corpus = tiny_corpus()
    bpe.train_from_iterator([" ".join(corpus)] * 2 + [" " + w for w in corpus], vocab_size=700, min_frequency=2,
                            special_tokens=SPECIAL_TOKENS, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        vocab = json.loads(Path(tmp, "vocab.json").read_text(encoding="utf-8"))
        merges = [tuple(line.split()) for line in Path(tmp, "merges.txt").read_text(encoding="utf-8").splitlines()
                  if line and not line.startswith("#")]
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=512)


def write_tiny_bridgetower(directory, seed: int = 0) -> Path:
    """A tiny random ``BridgeTowerForImageAndTextRetrieval`` with the real model's layout (6 cross-modal layers
    over the top of 6-layer uni-modal towers, 12 text heads; ViT patch 16 trained at 288 px), a small RoBERTa
    byte-level BPE tokenizer trained here on the class vocabularies, and the checkpoint's image processor
    config — saved with ``save_pretrained`` so that :meth:`BridgeTowerBackend.load` reads it like the Hub's."""
    from transformers import BridgeTowerConfig, BridgeTowerForImageAndTextRetrieval


    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_bpe_tokenizer()
    vocab_size = len(tokenizer)
    text = dict(
        vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=6, num_attention_heads=12,
        max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2, initializer_factor=1.0,
    )
    vision = dict(hidden_size=64, num_hidden_layers=6, patch_size=16, image_size=288, share_layernorm=True)
    config = BridgeTowerConfig(
        text_config=text, vision_config=vision, hidden_size=48, num_hidden_layers=6, num_attention_heads=12,
        share_cross_modal_transformer_layers=True, share_link_tower_layers=False, initializer_factor=1.0,
    )
    torch.manual_seed(seed)
    model = BridgeTowerForImageAndTextRetrieval(config)
    with torch.no_grad():  # post_init's near-zero std would make every map vanish: spread the weights
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    processor = {
        "image_processor_type": "BridgeTowerImageProcessor", "do_resize": True, "size": {"shortest_edge": 288},
        "size_divisor": 32, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_pad": True,
        "do_center_crop": True, "crop_size": {"shortest_edge": 288},
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    (directory / "README.md").write_text(
        "Tiny randomly initialised BridgeTower ITM written by `pnp-ovss tiny-model --backend bridgetower` for\n"
        "offline tests. Its maps are meaningless; use it to exercise the workflow without downloading weights.\n",
        encoding="utf-8",
    )
    return directory

"""Model loading (issue #3): the tiny random BLIP saved and loaded through the real path, the authors'
LayerNorm eps, frozen eval model, [ENC] token, clear error for a missing model offline, the CLI."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch

from pnp_ovss.errors import ModelError
from pnp_ovss.backends.blip import (
    AUTHORS_TEXT_LN_EPS,
    AUTHORS_VISION_LN_EPS,
    ensure_enc_token,
    layer_norm_eps_in_use,
    load_blip,
)
from pnp_ovss.backends.cli import register
from pnp_ovss.backends.loading import resolve_device


def test_tiny_model_loads_frozen_in_eval_with_the_authors_eps(tiny_model, caplog):
    from transformers import BlipConfig

    saved = BlipConfig.from_pretrained(str(tiny_model))
    assert saved.vision_config.layer_norm_eps == 1e-5  # like the Hub checkpoint's config
    with caplog.at_level(logging.INFO, logger="pnp_ovss.backends.blip"):
        model, tok = load_blip(str(tiny_model), image_size=336, device="cpu")
    eps = layer_norm_eps_in_use(model)
    assert eps == {"vision": {AUTHORS_VISION_LN_EPS}, "text": {AUTHORS_TEXT_LN_EPS}}
    assert "1e-05 -> 1e-06" in caplog.text
    assert "24x24 -> 21x21" in caplog.text
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.config.text_config.num_hidden_layers == 12 and model.config.text_config.num_attention_heads == 12
    assert tok.convert_tokens_to_ids("[ENC]") == model.config.text_config.vocab_size - 1
    assert tok.tokenize("A picture of pottedplant") == ["a", "picture", "of", "potted", "##plant"]


def test_tiny_model_itm_forward_runs_at_336(tiny_blip):
    model, tok = tiny_blip
    enc = tok(["A picture of cat"], return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], pixel_values=torch.zeros(1, 3, 336, 336), interpolate_pos_encoding=True)
    assert out.itm_score.shape == (1, 2) and torch.isfinite(out.itm_score).all()


def test_enc_token_added_like_blip_init_tokenizer_when_missing():
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "picture", "of"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    enc = ensure_enc_token(tok, vocab_size=len(vocab) + 2)
    assert tok.convert_tokens_to_ids("[DEC]") == len(vocab)  # bos first (BLIP: 30522)
    assert enc == len(vocab) + 1  # then [ENC] (BLIP: 30523)
    with pytest.raises(ModelError, match="outside"):
        ensure_enc_token(BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}), vocab_size=len(vocab))


def test_missing_model_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_blip("pnp-ovss-tests/no-such-blip", image_size=336, device="cpu")
    msg = str(err.value)
    assert "pnp-ovss-tests/no-such-blip" in msg and "HF_HUB_OFFLINE=1" in msg


def test_image_size_must_be_a_multiple_of_the_patch(tiny_model):
    with pytest.raises(ModelError, match="multiple of the patch size 16"):
        load_blip(str(tiny_model), image_size=330, device="cpu")


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA"):
            resolve_device("cuda")


def test_tiny_model_cli_writes_a_loadable_model(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["tiny-model", str(tmp_path / "m")])
    assert args.func(args) == 0
    assert "gradcam={model: " in capsys.readouterr().out
    model, tok = load_blip(str(tmp_path / "m"), image_size=160, device="cpu")
    assert model.config.vision_config.image_size == 384
    args = parser.parse_args(["tiny-model", "--backend", "bridgetower", str(tmp_path / "bt")])
    assert args.func(args) == 0
    assert "gradcam={backend: bridgetower, model: " in capsys.readouterr().out
    from pnp_ovss.backends import load_model

    loaded = load_model("auto", str(tmp_path / "bt"), 288, "cpu")
    assert loaded.backend.name == "bridgetower" and loaded.patch_size == 16
    assert {"tokenizer.json", "preprocessor_config.json", "config.json"} <= {p.name for p in (tmp_path / "bt").iterdir()}
    from pnp_ovss.cli import COMMAND_MODULES

    assert "pnp_ovss.backends.cli" in COMMAND_MODULES

"""The BridgeTower backend on a tiny random BridgeTower: the fast path against the straightforward
full forward/backward path, class spans on byte-level BPE captions (checked by hand on a hand-made BPE),
batch independence under the clean rules, and how the config chooses and constrains the backend."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pnp_ovss.backends import get_backend, resolve_backend_name
from pnp_ovss.backends.bridgetower import caption_segments, segment_counts
from pnp_ovss.config import gradcam_params, normalise, plan_runs, resolve_fixes
from pnp_ovss.errors import ConfigError, ModelError


BT = get_backend("bridgetower")
CLEAN = dict(layer=3, head=5, drop_iter=3, drop_patches=10, exclude_sep_rows=True, mean_last_class=True, keep_spaces=True)
LISTS = [["cat", "dog"], ["potted plant", "tvmonitor", "aeroplane"], ["person"], ["sky", "sea", "sand", "tree"]]


@pytest.fixture(scope="module")
def bt(tiny_bridgetower):
    return BT.load(str(tiny_bridgetower), 288, "cpu")


def random_pixels(n, size, seed):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_same(got, want):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.caption == b.caption and a.maps.shape == b.maps.shape
        scale = float(np.abs(b.maps).max())
        assert scale > 0, f"image {i}: all-zero maps prove nothing"
        np.testing.assert_allclose(a.maps, b.maps, rtol=1e-3, atol=1e-5 * scale, err_msg=f"image {i}")
        np.testing.assert_array_equal(a.dropped, b.dropped, err_msg=f"image {i}")


# ------------------------------------------------------------------------------------------------
# fast path == straightforward path


@pytest.mark.parametrize(
    "lists,size,params",
    [
        (LISTS[:1], 288, dict(CLEAN, layer=1, head=0)),  # the trained grid, no interpolation
        (LISTS[:3], 160, dict(CLEAN, drop_iter=2)),  # mixed caption lengths, interpolated positions
        (LISTS[1:], 224, dict(CLEAN, layer=5, head=7, keep_spaces=False)),
    ],
    ids=["1img-288px-layer1", "3img-160px-layer3", "3img-224px-layer5-nospaces"],
)
def test_fast_path_equals_full_forward_backward(bt, lists, size, params):
    from support.gradcam_reference import reference_gradcam_batch

    x = random_pixels(len(lists), size, seed=len(lists))
    fast = bt.gradcam_batch(x, lists, params)
    ref = reference_gradcam_batch(bt.model, bt.tokenizer, x, lists, params, pad_to=64, backend="bridgetower")
    assert_same(fast, ref)
    grid = size // 16
    for res, names in zip(fast, lists):
        assert res.maps.shape == (len(names), params["drop_iter"], grid, grid)
        assert res.dropped.shape == (params["drop_iter"], params["drop_patches"])


def test_last_cross_modal_layer_gives_zero_maps(bt):
    """Only row 0 (<s>) of the last cross-modal text layer reaches the pooler: every class row's gradient is 0."""
    res = bt.gradcam_batch(random_pixels(1, 160, 1), [["cat", "dog"]], dict(CLEAN, layer=6))[0]
    assert res.maps.shape == (2, 3, 10, 10) and not res.maps.any()


def test_reference_leaves_the_model_frozen(bt):
    from support.gradcam_reference import reference_gradcam_batch

    reference_gradcam_batch(bt.model, bt.tokenizer, random_pixels(1, 160, 0), [["cat"]], dict(CLEAN, drop_iter=1), pad_to=32, backend="bridgetower")
    assert not any(p.requires_grad for p in bt.model.parameters())
    assert all(p.grad is None for p in bt.model.parameters())


def test_clean_rules_are_independent_of_the_batch(bt):
    x = random_pixels(4, 160, seed=3)
    whole = bt.gradcam_batch(x, LISTS, CLEAN)
    singles = [bt.gradcam_batch(x[i : i + 1], LISTS[i : i + 1], CLEAN)[0] for i in range(4)]
    order = [3, 1, 0, 2]
    shuffled = bt.gradcam_batch(x[order], [LISTS[i] for i in order], CLEAN)
    assert_same(singles, whole)
    assert_same([shuffled[order.index(i)] for i in range(4)], whole)


def test_layer_and_head_out_of_range_name_the_model_family(bt):
    with pytest.raises(ValueError, match="bridgetower model has cross-attention layers 1..6"):
        bt.gradcam_batch(random_pixels(1, 160, 0), [["cat"]], dict(CLEAN, layer=7))
    with pytest.raises(ValueError, match="heads 0..11"):
        bt.gradcam_batch(random_pixels(1, 160, 0), [["cat"]], dict(CLEAN, head=12))


# ------------------------------------------------------------------------------------------------
# class spans on BPE captions


def hand_made_bpe():
    """A byte-level BPE whose merges are written out here, so every expected piece below is worked by hand."""
    from transformers import RobertaTokenizer

    merges = [("Ġ", "p"), ("Ġp", "o"), ("Ġpo", "t"), ("t", "e"), ("te", "d"), ("l", "a"), ("la", "n"),
              ("Ġ", "d"), ("Ġd", "o"), ("Ġdo", "g"), ("Ġ", "o"), ("Ġo", "f")]
    symbols = ["<s>", "<pad>", "</s>", "<unk>", "Ġ", *"Apicturofdglanse"] + ["".join(m) for m in merges] + ["<mask>"]
    vocab = {}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=merges)


def test_hand_made_bpe_spans_with_spaces_kept_and_removed():
    tok = hand_made_bpe()
    t = BT.tokenize(tok, [["potted plant", "dog"], ["dog"]], keep_spaces=True)
    pieces = tok.convert_ids_to_tokens(t.input_ids[0])
    # <s> | A Ġp i c t u r e Ġof | Ġpot ted Ġp lan t | Ġdog | </s>
    assert pieces == ["<s>", "A", "Ġp", "i", "c", "t", "u", "r", "e", "Ġof", "Ġpot", "ted", "Ġp", "lan", "t", "Ġdog", "</s>"]
    assert t.prefix_rows == 9 and t.piece_counts == [[5, 1], [1]]
    assert tok.convert_ids_to_tokens(t.input_ids[1])[10:] == ["Ġdog", "</s>"] + ["<pad>"] * 5
    released = BT.tokenize(tok, [["potted plant", "dog"]], keep_spaces=False)
    assert tok.convert_ids_to_tokens(released.input_ids[0])[10:16] == ["Ġpot", "ted", "p", "lan", "t", "Ġdog"]
    assert released.piece_counts == [[5, 1]] and released.captions == ["A picture of pottedplant dog"]


def test_segment_counts_accept_offsets_with_or_without_the_leading_space():
    caption, spans = caption_segments(["sand beach", "sky"], keep_spaces=True)
    assert caption == "A picture of sand beach sky"
    # tokens: <s> A Ġpicture Ġof Ġsand Ġbe ach Ġsky </s>
    trimmed = [(0, 0), (0, 1), (2, 9), (10, 12), (13, 17), (18, 20), (20, 23), (24, 27), (0, 0)]
    untrimmed = [(0, 0), (0, 1), (1, 9), (9, 12), (12, 17), (17, 20), (20, 23), (23, 27), (0, 0)]
    special = [True] + [False] * 7 + [True]
    assert segment_counts(trimmed, special, spans, caption) == [3, 3, 1]
    assert segment_counts(untrimmed, special, spans, caption) == [3, 3, 1]
    with pytest.raises(ValueError, match="'sky' gives no tokens"):
        segment_counts(trimmed[:-2] + [(0, 0)], special[:-1], spans, caption)


def test_tiny_tokenizer_spans_reassemble_every_class_name(bt):
    from pnp_ovss.vocab import load_vocabulary

    tok = bt.tokenizer
    for dataset in ("voc", "ade20k", "coco_stuff"):
        names = list(load_vocabulary(dataset).names)
        for i in range(0, len(names), 7):
            chunk = names[i : i + 7]
            t = BT.tokenize(tok, [chunk], keep_spaces=True)
            pieces = tok.convert_ids_to_tokens(t.input_ids[0])
            row = 1 + t.prefix_rows
            for name, n in zip(chunk, t.piece_counts[0]):
                text = "".join(pieces[row : row + n]).replace("Ġ", " ").strip()
                assert text == " ".join(name.split()), (dataset, name, pieces[row : row + n])
                row += n
            assert pieces[row] == "</s>"


# ------------------------------------------------------------------------------------------------
# choosing the backend


def test_auto_reads_the_checkpoint_and_the_model_id(tiny_bridgetower, tiny_model, tmp_path):
    assert resolve_backend_name("auto", str(tiny_bridgetower)) == "bridgetower"
    assert resolve_backend_name("auto", str(tiny_model)) == "blip"
    assert resolve_backend_name("auto", "BridgeTower/bridgetower-base-itm-mlm") == "bridgetower"
    assert resolve_backend_name("auto", "Salesforce/blip-itm-large-flickr") == "blip"
    other = tmp_path / "clip"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ConfigError, match="'clip' checkpoint, which no backend runs"):
        resolve_backend_name("auto", str(other))
    with pytest.raises(ConfigError, match="set gradcam.backend"):
        resolve_backend_name("auto", "someone/some-model")


def test_blip_backend_on_a_bridgetower_checkpoint_is_refused_before_any_job(tiny_bridgetower):
    from pnp_ovss.backends.checkpoints import check_model_choice

    with pytest.raises(ModelError, match="'bridgetower' checkpoint but gradcam.backend is 'blip'"):
        check_model_choice(str(tiny_bridgetower), 336, "blip")
    assert check_model_choice(str(tiny_bridgetower), 336, "bridgetower") == 16
    with pytest.raises(ModelError, match="not a multiple of the patch size 16"):
        check_model_choice(str(tiny_bridgetower), 300, "bridgetower")


def test_bridgetower_runs_the_clean_rules_with_its_recorded_defaults(tiny_bridgetower):
    cfg = normalise({"gradcam": {"backend": "bridgetower", "model": str(tiny_bridgetower)}})
    fixes = resolve_fixes(cfg)
    assert all(fixes[k] for k in ("exclude_sep_rows", "mean_last_class", "keep_spaces", "normalize_ade"))
    assert not fixes["nan_guard"]  # the pipeline's own quirks still follow the mode
    runs, table = plan_runs(cfg)
    g, r = table[runs[0].gradcam], table[runs[0].refine]
    assert (g["backend"], g["layer"], g["head"], r["threshold"]) == ("bridgetower", BT.defaults.layer, BT.defaults.head, BT.defaults.threshold)
    assert "annotation-free search" in BT.defaults.chosen_by
    with pytest.raises(ConfigError, match="fixes.exclude_sep_rows: false reproduces a quirk of the released BLIP code"):
        resolve_fixes(normalise({"gradcam": {"backend": "bridgetower"}, "fixes": {"exclude_sep_rows": False}}))


def test_blip_parameters_carry_no_backend_key_so_earlier_hashes_stand():
    cfg = normalise({})
    p = gradcam_params(cfg, cfg["gradcam"], "x")
    assert "backend" not in p and (p["layer"], p["head"]) == (8, 9)
    assert p == gradcam_params(normalise({"gradcam": {"layer": 8, "head": 9}}), normalise({"gradcam": {"layer": 8, "head": 9}})["gradcam"], "x")
    runs, table = plan_runs(cfg)
    assert table[runs[0].refine]["threshold"] == 0.15


def test_offline_hub_id_names_the_model_and_the_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="hf download BridgeTower/no-such-model"):
        BT.load("BridgeTower/no-such-model", 288, "cpu")

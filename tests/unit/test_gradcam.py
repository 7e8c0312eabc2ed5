"""GradCAM + Salience Drop (issue #3) on a tiny random BLIP: the fast path against the straightforward
reference path (benchmarks/gradcam_reference.py) and against an independent implementation of §4–§5
written here; batch independence of the clean ranking; the pieces (§3 preprocessing, §4.5 grouping,
§5 ranking) on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from support.fakes import CLASS_LISTS
from pnp_ovss.backends.blip import gradcam_batch, tokenize_captions
from pnp_ovss.gradcam import (
    CLIP_MEAN,
    CLIP_STD,
    class_maps,
    preprocess_image,
    ranking_scores,
    top_patches,
    uses_released_ade_input,
    zero_patch_pixels,
)

FAITHFUL = dict(layer=8, head=9, drop_iter=3, drop_patches=10, exclude_sep_rows=False, mean_last_class=False)
CLEAN = dict(FAITHFUL, exclude_sep_rows=True, mean_last_class=True)


def random_pixels(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def assert_same_results(got, want, what=""):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.caption == b.caption
        assert a.maps.shape == b.maps.shape, f"{what} image {i}"
        scale = float(np.abs(b.maps).max())
        assert scale > 0
        np.testing.assert_allclose(a.maps, b.maps, rtol=1e-3, atol=1e-5 * scale, err_msg=f"{what} image {i}")
        np.testing.assert_array_equal(a.dropped, b.dropped, err_msg=f"{what} image {i}")


# ------------------------------------------------------------------------------------------------
# fast path == straightforward reference path (full forward/backward, 500-token captions, all layers)

COMPOSITIONS = [
    # (class lists, image size, params)
    ([CLASS_LISTS[0]], 336, FAITHFUL),
    ([CLASS_LISTS[0], CLASS_LISTS[1], CLASS_LISTS[2]], 160, dict(FAITHFUL, drop_iter=2)),
    ([CLASS_LISTS[4], CLASS_LISTS[5]], 160, dict(FAITHFUL, layer=1, head=0)),
    ([CLASS_LISTS[3], CLASS_LISTS[0], CLASS_LISTS[5], CLASS_LISTS[2]], 160, dict(CLEAN, layer=11, head=11, drop_iter=2)),
]


@pytest.mark.parametrize("lists,size,params", COMPOSITIONS, ids=["1img-336px", "3img-mixed", "layer1", "clean-layer11"])
def test_fast_path_equals_reference_path(tiny_blip, lists, size, params):
    from support.gradcam_reference import reference_gradcam_batch

    model, tok = tiny_blip
    x = random_pixels(len(lists), size, seed=len(lists))
    fast = gradcam_batch(model, tok, x, lists, params)
    ref = reference_gradcam_batch(model, tok, x, lists, params, pad_to=500)
    assert_same_results(fast, ref, "fast vs reference")
    for res, names in zip(fast, lists):
        p = size // 16
        assert res.maps.shape == (len(names), params["drop_iter"], p, p)
        assert res.dropped.shape == (params["drop_iter"], params["drop_patches"])


def test_last_layer_maps_are_zero_but_run(tiny_blip):
    """At the last text layer only the [ENC] row reaches the ITM head, so every class row's gradient is 0."""
    model, tok = tiny_blip
    res = gradcam_batch(model, tok, random_pixels(1, 160, 1), [["cat", "dog"]], dict(FAITHFUL, layer=12))[0]
    assert res.maps.shape == (2, 3, 10, 10) and not res.maps.any()


def test_reference_leaves_the_model_frozen(tiny_blip):
    from support.gradcam_reference import reference_gradcam_batch

    model, tok = tiny_blip
    reference_gradcam_batch(model, tok, random_pixels(1, 160, 0), [["cat"]], dict(FAITHFUL, drop_iter=1), pad_to=32)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------------
# an independent, straightforward implementation of §4–§5 (HF forward with output_attentions, loops)


def independent_gradcam(model, tok, images, class_names, layer, head, drop_iter, k, exclude_sep, mean_last):
    """ALGORITHM.md §4.2–§5 written out directly: the released word-piece walk, explicit pixel blocks."""
    captions = ["A picture of " + " ".join(n.replace(" ", "").replace("-", "") for n in names) for names in class_names]
    enc = tok(captions, padding="longest", return_tensors="pt")
    ids = enc["input_ids"].clone()
    ids[:, 0] = tok.convert_tokens_to_ids("[ENC]")
    mask = enc["attention_mask"]
    b_count, length = ids.shape
    size = images.shape[-1]
    p = size // 16
    sep = tok.sep_token_id
    dropped = [[] for _ in range(b_count)]
    maps = [np.zeros((len(n), drop_iter, p, p)) for n in class_names]
    chosen = np.zeros((b_count, drop_iter, k), dtype=np.int64)
    for d in range(drop_iter):
        x = images.clone()
        for b in range(b_count):
            for cell in dropped[b]:
                r, c = divmod(cell, p)
                x[b, :, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16] = 0
        x.requires_grad_(True)
        img = model.vision_model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        out = model.text_encoder(
            input_ids=ids, attention_mask=mask, encoder_hidden_states=img, output_attentions=True
        )
        attn = out.cross_attentions[layer - 1]
        match = model.itm_head(out.last_hidden_state[:, 0, :])[:, 1].sum()
        (grad,) = torch.autograd.grad(match, attn)
        a = attn.detach().double().numpy()[:, head]  # [B, L, 1+P²]
        g = grad.double().numpy()[:, head]
        cam = np.zeros((b_count, length - 1, p, p))
        for b in range(b_count):
            for t in range(1, length):
                for cell in range(p * p):
                    cam[b, t - 1, cell // p, cell % p] = a[b, t, 1 + cell] * max(0.0, g[b, t, 1 + cell]) * float(mask[b, t])
        for b in range(b_count):
            kept = cam[b].copy()
            for cell in dropped[b]:
                kept[:, cell // p, cell % p] = 0
            row_ids = ids[b, 1:].tolist()
            pieces = tok.convert_ids_to_tokens(row_ids[: row_ids.index(sep)])[3:]
            rows = kept[3:-1]
            classes, acc, n = [], None, 0
            for i, piece in enumerate(pieces):
                if not piece.startswith("##"):
                    if acc is not None:
                        classes.append(acc / n)
                    acc, n = rows[i].copy(), 1
                else:
                    acc, n = acc + rows[i], n + 1
            classes.append(acc / n if mean_last else acc)
            maps[b][:, d] = np.stack(classes)
            if exclude_sep:
                s = cam[b, 3 : 3 + len(pieces)].sum(0).reshape(-1)
            else:
                s = cam[b, 3:-1].sum(0).reshape(-1)
            s = s.astype(np.float32)
            s[dropped[b]] = 0
            top = np.argsort(s)[-k:]
            chosen[b, d] = top
            dropped[b] += top.tolist()
    return maps, chosen


@pytest.mark.parametrize(
    "lists,params",
    [
        ([CLASS_LISTS[1], CLASS_LISTS[0], CLASS_LISTS[3]], FAITHFUL),
        ([CLASS_LISTS[1], CLASS_LISTS[0], CLASS_LISTS[3]], CLEAN),
        ([CLASS_LISTS[5], CLASS_LISTS[2]], dict(FAITHFUL, layer=3, head=2, drop_iter=4, drop_patches=7)),
    ],
    ids=["faithful", "clean", "layer3-head2"],
)
def test_fast_path_equals_independent_implementation(tiny_blip, lists, params):
    model, tok = tiny_blip
    x = random_pixels(len(lists), 160, seed=7)
    fast = gradcam_batch(model, tok, x, lists, params)
    maps, chosen = independent_gradcam(
        model, tok, x, lists, params["layer"], params["head"], params["drop_iter"], params["drop_patches"],
        params["exclude_sep_rows"], params["mean_last_class"],
    )
    for i, res in enumerate(fast):
        scale = np.abs(maps[i]).max()
        np.testing.assert_allclose(res.maps, maps[i], rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_array_equal(res.dropped, chosen[i])
    # the iterations really drop: every later map is zero at the cells dropped before
    p = 10
    for res in fast:
        for d in range(1, params["drop_iter"]):
            cells = np.unique(res.dropped[:d].reshape(-1))
            assert np.all(res.maps[:, d].reshape(len(res.maps), p * p)[:, cells] == 0)


# ------------------------------------------------------------------------------------------------
# batch (in)dependence


def test_clean_ranking_is_independent_of_batch_order_and_size(tiny_blip):
    model, tok = tiny_blip
    lists = CLASS_LISTS[:5]
    x = random_pixels(5, 160, seed=3)
    whole = gradcam_batch(model, tok, x, lists, CLEAN)
    order = [4, 2, 0, 3, 1]
    shuffled = gradcam_batch(model, tok, x[order], [lists[i] for i in order], CLEAN)
    singles = [gradcam_batch(model, tok, x[i : i + 1], [lists[i]], CLEAN)[0] for i in range(5)]
    pairs = gradcam_batch(model, tok, x[:2], lists[:2], CLEAN) + gradcam_batch(model, tok, x[2:], lists[2:], CLEAN)
    assert_same_results([shuffled[order.index(i)] for i in range(5)], whole, "shuffled")
    assert_same_results(singles, whole, "batch size 1")
    assert_same_results(pairs, whole, "batches 2+3")


def test_faithful_ranking_uses_the_sep_row_of_shorter_captions(tiny_blip):
    """A short caption next to a longer one ranks on rows 3..L-3 of the batch, i.e. its class row *and* its
    [SEP] row (§5, §10.4); alone, on its class row only. The token maps themselves do not depend on the batch."""
    from pnp_ovss.backends.blip import fast_token_maps

    model, tok = tiny_blip
    x = random_pixels(2, 160, seed=5)
    lists = [["cat"], ["bus", "car", "bicycle", "motorbike", "train"]]
    batched_tokens = tokenize_captions(tok, lists)
    alone_tokens = tokenize_captions(tok, lists[:1])
    batched = fast_token_maps(model, x, batched_tokens, 8, 9).numpy()
    alone = fast_token_maps(model, x[:1], alone_tokens, 8, 9).numpy()
    assert batched.shape[1] == 3 + 5 + 1 and alone.shape[1] == 3 + 1 + 1
    np.testing.assert_allclose(batched[0, :5], alone[0], rtol=1e-3, atol=1e-9)
    assert not batched[0, 5:].any()  # pads
    sep_row = batched[0, 4]
    assert sep_row.any()
    faithful = ranking_scores(batched, batched_tokens.piece_counts, exclude_sep_rows=False)[0]
    np.testing.assert_allclose(faithful, (batched[0, 3] + sep_row).reshape(-1), rtol=1e-6)
    clean = ranking_scores(batched, batched_tokens.piece_counts, exclude_sep_rows=True)[0]
    np.testing.assert_allclose(clean, ranking_scores(alone, alone_tokens.piece_counts, False)[0], rtol=1e-3, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# pieces


def test_position_embeddings_interpolation_equals_direct_bicubic(tiny_blip):
    model, _ = tiny_blip
    emb = model.vision_model.embeddings
    weight = emb.position_embedding.detach()  # [1, 1 + 24², D]
    d = weight.shape[-1]
    grid = weight[:, 1:].reshape(1, 24, 24, d).permute(0, 3, 1, 2)
    direct = torch.nn.functional.interpolate(grid, size=(21, 21), mode="bicubic", align_corners=False)
    direct = torch.cat([weight[:, :1], direct.permute(0, 2, 3, 1).reshape(1, 441, d)], dim=1)
    with torch.no_grad():
        got = emb.interpolate_pos_encoding(torch.zeros(1, 442, d), 336, 336)
        full = emb(torch.zeros(1, 3, 336, 336), interpolate_pos_encoding=True)
    assert got.shape == (1, 442, d)
    assert torch.equal(got, direct)
    # the embedding of a black image is patch-conv bias + class token + interpolated positions
    bias = emb.patch_embedding.bias.detach()
    expected = direct.clone()
    expected[:, 1:] += bias
    expected[:, 0] += emb.class_embedding.detach()[0, 0]
    torch.testing.assert_close(full, expected, rtol=0, atol=1e-6)


def test_preprocess_bicubic_clip_normalised_and_released_ade():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    x = preprocess_image(im, 32)
    ref = np.asarray(im.resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255.0
    ref = (ref - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), ref, rtol=1e-6, atol=1e-6)
    ade = preprocess_image(im, 32, released_ade=True)
    ref_ade = np.asarray(im.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255.0
    np.testing.assert_allclose(ade.permute(1, 2, 0).numpy(), ref_ade, rtol=0, atol=1e-7)
    assert uses_released_ade_input(True, {"normalize_ade": False})
    assert not uses_released_ade_input(True, {"normalize_ade": True})
    assert not uses_released_ade_input(False, {"normalize_ade": False})


def test_tokenize_captions_enc_token_longest_padding_and_pieces(tiny_blip):
    _, tok = tiny_blip
    t = tokenize_captions(tok, [["cat"], ["pottedplant", "dog"]])
    enc_id = tok.convert_tokens_to_ids("[ENC]")
    assert t.input_ids[:, 0].tolist() == [enc_id, enc_id]
    assert t.captions == ["A picture of cat", "A picture of pottedplant dog"]
    assert t.piece_counts == [[1], [2, 1]]
    assert t.input_ids.shape[1] == t.longest == 1 + 3 + 3 + 1
    assert t.attention_mask.sum(1).tolist() == [6, 8]
    assert tok.convert_ids_to_tokens(t.input_ids[1, 4:6].tolist()) == ["potted", "##plant"]
    padded = tokenize_captions(tok, [["cat"]], pad_to=500)
    assert padded.input_ids.shape == (1, 500) and padded.longest == 6


def test_class_maps_mean_pieces_and_last_class_sum_quirk():
    rows = np.arange(3 + 6, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    # pieces: class A = rows 3,4 ; class B = row 5 ; class C = rows 6,7,8
    faithful = class_maps(rows, [2, 1, 3], mean_last_class=False)
    clean = class_maps(rows, [2, 1, 3], mean_last_class=True)
    assert faithful[:, 0, 0].tolist() == [3.5, 5.0, 21.0]  # last multi-piece class summed (§10.7)
    assert clean[:, 0, 0].tolist() == [3.5, 5.0, 7.0]
    assert class_maps(rows, [1, 1], False)[:, 0, 0].tolist() == [3.0, 4.0]


def test_ranking_rows_faithful_include_sep_clean_only_class_rows():
    # batch of 2, longest caption has 3 class pieces: rows 0..2 prefix, 3..5 pieces, 6 [SEP] → L-1 = 7 rows
    maps = np.zeros((2, 7, 1, 2), np.float32)
    maps[:, :, 0, 0] = np.arange(7)
    maps[:, :, 0, 1] = 100
    maps[1, 5:, :, :] = 0  # image 1: one class piece (row 3), [SEP] at row 4, pads after
    maps[1, 4, 0, 1] = 1000  # its [SEP] row
    faithful = ranking_scores(maps, [[3], [1]], exclude_sep_rows=False)
    clean = ranking_scores(maps, [[3], [1]], exclude_sep_rows=True)
    assert faithful.shape == (2, 2)
    assert faithful[0].tolist() == [3 + 4 + 5, 300]
    assert faithful[1].tolist() == [3 + 4, 100 + 1000]  # rows 3..L-3 = its class row + its [SEP] row
    assert clean[1].tolist() == [3, 100]


def test_top_patches_argsort_last_k_and_zero_fill():
    s = np.array([0.5, 0.0, 3.0, 2.0, 0.0, 1.0], np.float32)
    assert top_patches(s, [], 3).tolist() == [5, 3, 2]  # ascending, the last k
    # already-dropped cells score 0; with fewer than k positives zero cells fill up (argsort order)
    got = top_patches(s, [2, 3], 3)
    assert got[-2:].tolist() == [0, 5]
    assert got[0] in (1, 2, 3, 4)  # a zero cell, possibly an already dropped one
    assert got.tolist() == np.argsort(np.array([0.5, 0, 0, 0, 0, 1.0], np.float32))[-3:].tolist()


def test_zero_patch_pixels_blocks():
    x = torch.ones(2, 3, 48, 48)
    cells = np.zeros((2, 3, 3), bool)
    cells[0, 1, 2] = True  # patch 5: rows 16..31, cols 32..47
    out = zero_patch_pixels(x, cells, 16)
    assert out[0, :, 16:32, 32:48].abs().sum() == 0
    assert out[0].sum() == 3 * (48 * 48 - 256)
    assert torch.equal(out[1], x[1])
    assert x.sum() == 2 * 3 * 48 * 48  # input untouched


def test_autocast_is_opt_in_and_gpu_only(caplog):
    from pnp_ovss.gradcam import _warn_once, autocast_context

    _warn_once.cache_clear()
    with autocast_context(torch.device("cpu"), "none"):
        assert not torch.is_autocast_enabled("cpu")
    with caplog.at_level("WARNING", logger="pnp_ovss.gradcam"):
        with autocast_context(torch.device("cpu"), "bf16"):
            assert not torch.is_autocast_enabled("cpu")
    assert "ignored, running fp32" in caplog.text


def test_layer_and_head_are_checked(tiny_blip):
    model, tok = tiny_blip
    with pytest.raises(ValueError, match="layer 13"):
        gradcam_batch(model, tok, random_pixels(1, 160, 0), [["cat"]], dict(FAITHFUL, layer=13))
    with pytest.raises(ValueError, match="head 12"):
        gradcam_batch(model, tok, random_pixels(1, 160, 0), [["cat"]], dict(FAITHFUL, head=12))


def test_clean_captions_keep_the_spaces_of_class_names(tiny_blip):
    _, tok = tiny_blip
    released = tokenize_captions(tok, [["potted plant", "dog"]])
    kept = tokenize_captions(tok, [["potted plant", "dog"]], keep_spaces=True)
    assert released.captions == ["A picture of pottedplant dog"]
    assert kept.captions == ["A picture of potted plant dog"]
    # the class span covers the pieces of every word of the name
    assert kept.piece_counts == [[len(tok.tokenize("potted")) + len(tok.tokenize("plant")), 1]]
    n = kept.piece_counts[0][0]
    assert tok.convert_ids_to_tokens(kept.input_ids[0, 4 : 4 + n].tolist()) == tok.tokenize("potted plant")


def test_keep_spaces_follows_mode_and_dataset():
    from pnp_ovss.config import gradcam_params, labels_params, normalise, resolve_fixes

    assert resolve_fixes(normalise({"dataset": "voc"}))["keep_spaces"] is False
    assert resolve_fixes(normalise({"dataset": "voc", "mode": "clean"}))["keep_spaces"] is True
    assert resolve_fixes(normalise({"dataset": "folder", "images": "x", "classes": "a b"}))["keep_spaces"] is True
    off = normalise({"dataset": "folder", "images": "x", "classes": "a b", "fixes": {"keep_spaces": False}})
    assert resolve_fixes(off)["keep_spaces"] is False
    # off, the stage parameters (and hashes) are those of earlier versions; on, both stages say so
    voc = normalise({"dataset": "voc"})
    assert "keep_spaces" not in labels_params(voc) and "keep_spaces" not in gradcam_params(voc, voc["gradcam"], "h")
    clean = normalise({"dataset": "voc", "mode": "clean"})
    assert labels_params(clean)["keep_spaces"] is True and gradcam_params(clean, clean["gradcam"], "h")["keep_spaces"]


def test_labels_records_name_classes_as_the_caption_will():
    from pnp_ovss.labels.parser import parse_answer
    from pnp_ovss.vocab import load_vocabulary

    vocab = load_vocabulary("coco_object")
    answer = parse_answer("[10: traffic light], [90]", "coco_object", vocab, "faithful")
    assert answer.to_record(vocab)["names"] == ["trafficlight"]
    assert answer.to_record(vocab, keep_spaces=True)["names"] == ["traffic light"]


# ------------------------------------------------------------------------------------------------
# opt-in fused attention in the vision tower (gradcam.vision_attention: sdpa)


@pytest.mark.parametrize("params", [FAITHFUL, dict(CLEAN, layer=4, head=2)], ids=["faithful", "clean"])
def test_sdpa_vision_tower_gives_the_eager_maps_up_to_rounding(tiny_model, params):
    from pnp_ovss.backends import get_backend
    from pnp_ovss.backends.blip import load_blip

    eager_model, tok = load_blip(str(tiny_model), image_size=160, device="cpu")
    fused_model, _ = load_blip(str(tiny_model), image_size=160, device="cpu")
    said = get_backend("blip").use_fused_vision_attention(fused_model)
    assert "self-attention layers of the vision tower use torch SDPA" in said
    lists = [CLASS_LISTS[0], CLASS_LISTS[1], CLASS_LISTS[2]]
    x = random_pixels(len(lists), 160, seed=7)
    eager = gradcam_batch(eager_model, tok, x, lists, params)
    fused = gradcam_batch(fused_model, tok, x, lists, params)
    assert_same_results(fused, eager, "sdpa vs eager")
    # the vision tower really changed: its attention returns no weights now
    layer = fused_model.vision_model.encoder.layers[0].self_attn
    out, weights = layer(torch.randn(1, 5, fused_model.config.vision_config.hidden_size))
    assert weights is None and out.shape == (1, 5, fused_model.config.vision_config.hidden_size)


def test_vision_attention_enters_the_hash_only_when_fused():
    from pnp_ovss.config import normalise, plan_runs

    def gradcam_table(**g):
        _, table = plan_runs(normalise({"gradcam": g}))
        return {h: p for h, p in table.items() if p["stage"] == "gradcam"}

    default, eager, fused = gradcam_table(), gradcam_table(vision_attention="eager"), gradcam_table(vision_attention="sdpa")
    assert default == eager and "vision_attention" not in next(iter(default.values()))
    assert next(iter(fused.values()))["vision_attention"] == "sdpa" and set(fused) != set(default)

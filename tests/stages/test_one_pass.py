"""One pass for the search (issue #11): the GradCAM token maps of every head of several layers from one
forward/backward equal the fast path's map of each (layer, head), for both backends."""

from __future__ import annotations

import pytest
import torch

from pnp_ovss.backends import get_backend

LISTS = [["cat", "dog"], ["potted plant", "tvmonitor", "aeroplane"], ["person"]]


@pytest.fixture(scope="module")
def blip(tiny_model):
    return get_backend("blip").load(str(tiny_model), 160, "cpu")


@pytest.fixture(scope="module")
def bridgetower(tiny_bridgetower):
    return get_backend("bridgetower").load(str(tiny_bridgetower), 160, "cpu")


@pytest.mark.parametrize("which,layers", [("blip", [2, 8, 11]), ("bridgetower", [1, 3, 5])])
def test_one_pass_maps_equal_the_fast_path_of_every_layer_and_head(request, which, layers):
    loaded = request.getfixturevalue(which)
    backend, model = loaded.backend, loaded.model
    tokens = backend.tokenize(loaded.tokenizer, LISTS, keep_spaces=True)
    x = torch.randn(3, 3, 160, 160, generator=torch.Generator().manual_seed(7))
    maps = backend.one_pass_token_maps(model, x, tokens, layers[::-1])  # order given does not matter
    _, heads = backend.layers_heads(model)
    assert sorted(maps) == layers
    nonzero = 0
    for layer in layers:
        assert maps[layer].shape == (3, heads, tokens.input_ids.shape[1] - 1, 10, 10)
        for head in range(heads):
            want = backend.token_maps(model, x, tokens, layer, head)
            got = maps[layer][:, head]
            scale = float(want.abs().max())
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * max(scale, 1e-30))
            nonzero += scale > 0
    assert nonzero > heads  # the comparison is on real maps, not zeros


def test_one_pass_checks_the_layers(blip):
    tokens = blip.backend.tokenize(blip.tokenizer, [["cat"]])
    with pytest.raises(ValueError, match="layer 13 out of range"):
        blip.backend.one_pass_token_maps(blip.model, torch.zeros(1, 3, 160, 160), tokens, [8, 13])


def test_tiny_clip_scores_through_the_real_loading_path(tmp_path, monkeypatch, tiny_clip):
    import numpy as np

    from pnp_ovss.errors import ModelError
    from pnp_ovss.backends.clip import ClipScorer
    from pnp_ovss.search.reward import prompts_for

    scorer = ClipScorer(str(tiny_clip), "cpu")
    images = np.random.default_rng(0).random((3, scorer.image_size, scorer.image_size, 3))
    logits = scorer.logits(images, prompts_for(["cat", "potted plant"], "a photo of a {}."))
    assert logits.shape == (3, 2) and np.isfinite(logits).all() and np.abs(logits).max() <= 100 + 1e-6
    np.testing.assert_allclose(scorer.logits(images[:1], ["a photo of a cat."]), logits[:1, :1], rtol=1e-5)
    # the all-zero negative image: computed once, then cached, with the same logits
    zero = np.zeros((2, scorer.image_size, scorer.image_size, 3))
    mixed = scorer.logits(np.concatenate([images[:1], zero[:1]]), ["a photo of a cat."])
    np.testing.assert_allclose(mixed[0], logits[0, :1], rtol=1e-5)
    direct = (100 * scorer.image_features(zero[:1]) @ scorer.text_features(["a photo of a cat."]).T).numpy()
    np.testing.assert_allclose(scorer.logits(zero, ["a photo of a cat."]), np.repeat(direct, 2, axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="must contain"):
        prompts_for(["cat"], "a photo")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="hf download openai/no-such-clip"):
        ClipScorer("openai/no-such-clip", "cpu")

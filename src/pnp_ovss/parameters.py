"""Which parameters enter each stage's key: the one place that says it (ALGORITHM.md §10 for the switches).

A stage folder's hash (``short_hash`` of the parameters :mod:`pnp_ovss.config` builds from these names) is how
every result on disk is found again, so the rules are fixed:

- each stage's parameters are its own keys (below), its ``upstream`` stage hash and ``stage``;
- a parameter that was added after results existed enters a stage's key **only when it differs from the value
  every earlier result was made with** (:data:`ADDED_LATER`), so adding it changed no earlier hash;
- nothing about scheduling (shards, ``shard_size``, ``model_jobs``, threads, devices, ``limit``, ``data_root``)
  enters a key.

``tests/test_pins.py`` pins the resulting literal hashes. Dependency-free, so every layer may read it.
"""

from __future__ import annotations

#: the quirk switches of ALGORITHM.md §10 (and §1.2), each fixing one quirk in ``mode: clean``
FIX_NAMES = (
    "normalize_ade",
    "single_count_first_iteration",
    "exclude_sep_rows",
    "lookup_relabel",
    "nan_guard",
    "mean_last_class",
    "no_fallback_class",
    "always_background",
    "keep_spaces",
)
#: the switches each stage reads (``keep_spaces`` is in :data:`ADDED_LATER` for labels and gradcam)
LABELS_FIXES = ("no_fallback_class",)
GRADCAM_FIXES = ("normalize_ade", "exclude_sep_rows", "mean_last_class")
REFINE_FIXES = ("single_count_first_iteration", "lookup_relabel", "nan_guard", "always_background")
SEARCH_MAPS_FIXES = ("normalize_ade", "mean_last_class", "keep_spaces")

#: the keys a sweep may give a list of values, per config section
SWEEPABLE = {
    "gradcam": ("layer", "head", "drop_iter"),
    "refine": (
        "threshold",
        "blur_scale",
        "crf_iterations",
        "gaussian_sxy",
        "gaussian_compat",
        "bilateral_sxy",
        "bilateral_srgb",
        "bilateral_compat",
    ),
}

#: the config keys of each model/refine stage's key (besides ``stage``, ``upstream`` and the switches)
LABELS_KEYS = ("dataset", "mode", "source", "min_probability")
GRADCAM_KEYS = ("model", "image_size", "layer", "head", "drop_iter", "drop_patches", "batch_size", "autocast")
REFINE_KEYS = ("postprocess",) + SWEEPABLE["refine"] + REFINE_FIXES
SEARCH_MAPS_KEYS = ("backend", "model", "image_size", "layers", "heads", "autocast")
SEARCH_SCORE_KEYS = ("thresholds", "strategy", "trials", "seed", "mask", "contrast", "clip_model", "prompt", "miou")
EVALUATE_KEYS = ("protocol", "mmseg_variant")

#: per stage: parameters added after results existed, with the value every earlier result had. They enter the
#: stage's key only when they differ from it. (The search maps came after backends, so ``backend`` is always
#: in theirs; their ``keep_spaces`` is one of :data:`SEARCH_MAPS_FIXES`.)
ADDED_LATER = {
    "labels": {"keep_spaces": False},
    "gradcam": {"backend": "blip", "vision_attention": "eager", "keep_spaces": False, "simulate_gpu": None},
    "search": {"vision_attention": "eager"},
}


def added_later(stage: str, values: dict) -> dict:
    """The ``values`` of a stage's later-added parameters that enter its key: those not at their old value."""
    old = ADDED_LATER[stage]
    return {k: v for k, v in values.items() if v != old[k]}

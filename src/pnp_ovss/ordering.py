"""Image order and shards (DESIGN.md "Faithful batching across shards")."""

from __future__ import annotations

import torch


def faithful_order(ids: list[str], seed: int = 0) -> list[str]:
    """The released code's order: ``DistributedSampler`` defaults (shuffle, seed 0, world size 1),
    i.e. ``ids[torch.randperm(N, generator seeded seed)]``."""
    g = torch.Generator()
    g.manual_seed(seed)
    perm = torch.randperm(len(ids), generator=g).tolist()
    return [ids[i] for i in perm]


def make_shards(ids: list[str], shard_size: int) -> list[list[str]]:
    """Consecutive runs of ``shard_size`` ids (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    return [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]


def batches_of(ids: list[str], size: int) -> list[list[str]]:
    """Consecutive runs of ``size`` images in the given order (the released DataLoader batches)."""
    if size < 1:
        raise ValueError("batch_size must be >= 1")
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def shard_name(index: int) -> str:
    return f"shard-{index:04d}"

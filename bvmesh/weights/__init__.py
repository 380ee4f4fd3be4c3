"""Pretrained weights: which models exist, where their files are, and getting them verified.

    from bvmesh.weights import resolve
    rw = resolve(None)                      # the bundled default model, no network
    rw = resolve("bvmesh-acdc-v4", offline=True)
    rw.path, rw.sha256, rw.source           # -> hand rw.path to bvmesh.model.load_model

This package deals in files, bytes and SHA-256 only; it never imports torch, so
`bvmesh weights list` answers at once. See docs/weights.md.
"""

from __future__ import annotations

from .cache import cache_dir, file_sha256, is_offline
from .registry import BUNDLED_DIR, DEFAULT_MODEL, REGISTRY, ModelEntry
from .store import Check, ResolvedWeights, fetch, install, inventory, resolve, verify

__all__ = [
    "BUNDLED_DIR",
    "DEFAULT_MODEL",
    "REGISTRY",
    "Check",
    "ModelEntry",
    "ResolvedWeights",
    "cache_dir",
    "fetch",
    "file_sha256",
    "install",
    "inventory",
    "is_offline",
    "resolve",
    "verify",
]

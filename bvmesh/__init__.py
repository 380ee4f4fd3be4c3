"""bvmesh: 3D-consistent biventricular myocardium segmentation and meshes from short-axis MRI.

The public API mirrors the command line; heavy modules (torch) load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["__version__", "segment", "segment_cine", "load_model", "BvmeshError"]

from .errors import BvmeshError


def __getattr__(name: str):
    # Lazy so that `import bvmesh` (and `bvmesh --help`) does not import torch.
    if name == "segment":
        from .pipeline import segment

        return segment
    if name == "segment_cine":
        from .cine import segment_cine

        return segment_cine
    if name == "load_model":
        from .pipeline import load_model

        return load_model
    raise AttributeError(f"module 'bvmesh' has no attribute {name!r}")

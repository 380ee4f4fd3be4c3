"""Isotropic remeshing of a closed surface to a chosen edge length, keeping the base rim.

Uses gpytoolbox's ``remesh_botsch`` (Botsch & Kobbelt's split / collapse / flip /
tangential-relaxation loop, projected back onto the input surface), an optional extra:
``pip install 'bvmesh[remesh]'``. gpytoolbox's functions used here are MIT; its wheel
also carries a GPL module (``gpytoolbox.copyleft``) that bvmesh never imports, and it
pulls a convex solver (scs, ~150 MB) that remeshing does not need, so it is not a
default dependency. The edges between the base cap and the walls are given as feature
edges: they may be split and slid along, never flipped or cut across, so the cap stays
one plane with a sharp rim.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputError

#: Remeshing passes, unless asked otherwise. On 50 ACDC predictions (every fourth subject,
#: ED and ES: `python scripts/remesh_attempts.py`, docs/meshes.md) 2 passes gave a surface
#: that passed the gate at the edge asked for 46 times, 3 passes 41 times and a third slower
#: (1.58 s a remesh against 1.12): where the triangles fall decides, not the passes, so
#: bvmesh.mesh.build.ATTEMPTS tries 2, then 3, then a shorter edge.
ITERATIONS = 2
#: The edge length given when none is asked for: what electrophysiology meshes use.
DEFAULT_EDGE_MM = 1.5


#: Edge lengths tried in turn, as fractions of the one asked for, while the remeshed surface
#: fails the gate: edges much longer than a thin wall (the RV free wall, 3 mm) can be
#: projected onto its other side (2 mm edges crossed the test phantom's 3.5 mm RV wall).
LADDER = (1.0, 0.75, 0.5)


def edge_ladder(edge_mm: float) -> tuple[float, ...]:
    """The edge lengths to try for ``edge_mm``: itself, then the shorter ones (rounded to
    0.05 mm) down to 0.5 mm."""
    shorter = (round(round(edge_mm * f / 0.05) * 0.05, 2) for f in LADDER[1:] if edge_mm * f >= 0.5)
    return tuple(dict.fromkeys((float(edge_mm), *shorter)))


def available() -> bool:
    """Whether the remeshing extra is installed."""
    from importlib.util import find_spec

    return find_spec("gpytoolbox") is not None


def missing_note(edge_mm: float) -> str:
    """What a report says when remeshing was asked for but the extra is not installed."""
    return (f"not remeshed to {edge_mm:g} mm edges (marching cubes' density kept): install the "
            "remeshing extra, pip install 'bvmesh[remesh]'")


def rim_edges(faces: np.ndarray, base_faces: np.ndarray) -> np.ndarray:
    """(K, 2) vertex pairs of the edges shared by a base face and a wall face. Raises
    :class:`InputError` unless the surface is closed and manifold (each edge in exactly
    two faces), which the remesher needs."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner_base = np.tile(base_faces, 3)
    key = np.sort(edges, axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, owner_base = key[order], owner_base[order]
    # A closed manifold surface has each edge exactly twice: pairs sit side by side.
    paired = len(key) % 2 == 0 and (key[0::2] == key[1::2]).all() and \
        (key[1:-1:2] != key[2::2]).any(axis=1).all()
    if not paired:
        raise InputError("the surface to remesh is not closed and manifold (an edge not in "
                         "exactly two faces)")
    first, second = key[0::2], owner_base[0::2] != owner_base[1::2]
    return first[second]


def remesh(verts: np.ndarray, faces: np.ndarray, base_faces: np.ndarray,
           edge_mm: float, iterations: int = ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """The surface remeshed to edges of about ``edge_mm`` (mm) in ``iterations`` passes,
    the base rim kept sharp."""
    if edge_mm <= 0:
        raise InputError(f"the edge length must be positive, not {edge_mm:g} mm")
    rim = rim_edges(faces, base_faces)  # checks the surface is closed and manifold
    v, f = np.ascontiguousarray(verts, float), np.ascontiguousarray(faces, np.int64)
    try:
        # gpytoolbox's wrapper spends a third of its time looking for boundary vertices
        # and non-manifold edges, which the check above rules out, and importing it loads
        # the whole package (half a second of a cold run); its C++ binding (the wrapper's
        # own last call) is used directly where it is the one this was written for
        # (gpytoolbox 0.3.8), the wrapper otherwise.
        from gpytoolbox_bindings import _remesh_botsch_cpp_impl

        u, g = _remesh_botsch_cpp_impl(v, f.astype(np.int32), iterations, float(edge_mm),
                                       np.zeros(0, np.int32), rim.astype(np.int32), True)
    except (ImportError, TypeError):
        u, g = _remesh_botsch()(v, f, iterations, float(edge_mm), True,
                                feature_edges=rim.astype(np.int64))
    return np.asarray(u, float), np.asarray(g, np.int64)


def _remesh_botsch():
    """gpytoolbox's remesher, or an error saying how to install it."""
    try:
        with warnings.catch_warnings():  # its own modules' numpy/scipy deprecations
            warnings.simplefilter("ignore", DeprecationWarning)
            from gpytoolbox import remesh_botsch
    except ImportError:
        raise InputError("remeshing to an edge length needs gpytoolbox (an optional extra): "
                         "pip install 'bvmesh[remesh]'") from None
    return remesh_botsch

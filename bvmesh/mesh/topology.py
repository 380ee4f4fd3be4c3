"""Digital topology of the myocardium mask: its genus, closing its handles, and leaving
marching cubes nothing ambiguous.

Marching cubes of a mask's signed distance gives the surface of the mask read with
26-connectivity for the object and 6-connectivity for the background (measured: the
surface's Euler characteristic is twice the mask's 26-connected Euler number on real
segmentations). A myocardium whose mask has tunnels therefore meshes with handles.

``close_handles`` removes them by topology-preserving growth of the background
(Han, Xu & Prince, IEEE TMI 2002 call the idea "topology correction by region
growing"): start from a box around the mask, a solid of genus 0, and peel away every
voxel outside the mask that is a *simple point* (one whose removal changes no
topology), farthest from the mask first. What cannot be peeled without opening a
tunnel stays: thin plugs across the narrowest part of each tunnel. The result holds
the mask, and has the topology of a ball.

Voxels are peeled in parallel, one parity subfield at a time: two voxels of one
subfield are never 26-neighbours, so the simple-point test of one does not see the
other's removal, and parallel removal equals sequential removal.

Marching cubes reads 26/6 topology only where the mask leaves it nothing to decide:
where voxels meet only along an edge or at a corner it decides from the corner values
and may join or split differently. ``well_compose`` fills those places, again with
simple points only, so the surface's genus is the mask's.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage
from skimage.measure import euler_number

_OFFSETS = np.array([o for o in itertools.product((-1, 0, 1), repeat=3) if any(o)])
_FACE = np.flatnonzero(np.abs(_OFFSETS).sum(1) == 1)   # 6 face neighbours
_N18 = np.flatnonzero(np.abs(_OFFSETS).sum(1) <= 2)    # faces and edges


def _neighbour_table(points: np.ndarray, adjacent) -> np.ndarray:
    """(n, max degree + 1) indices of each point's neighbours and itself, padded with itself."""
    rows = [[i] + [j for j in range(len(points)) if j != i and adjacent(points[i] - points[j])]
            for i in range(len(points))]
    width = max(map(len, rows))
    return np.array([r + [r[0]] * (width - len(r)) for r in rows])


_ADJ26 = _neighbour_table(_OFFSETS, lambda d: np.abs(d).max() == 1)
_ADJ6_18 = _neighbour_table(_OFFSETS[_N18], lambda d: np.abs(d).sum() == 1)
_FACE_IN_18 = np.searchsorted(_N18, _FACE)


def _component_labels(bits: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Per row, label every set position with the smallest index of its component
    (adjacency given by ``table``); unset positions get len(table)."""
    n = table.shape[0]
    lab = np.where(bits, np.arange(n, dtype=np.int16), np.int16(n))
    while True:
        new = np.where(bits, lab[:, table].min(axis=2), np.int16(n))
        if np.array_equal(new, lab):
            return lab
        lab = new


def simple_points(neighbourhoods: np.ndarray) -> np.ndarray:
    """Which centres are simple (26-connected object, 6-connected background).

    ``neighbourhoods``: (K, 26) bool, the object in each centre's 26 neighbours (order
    of ``_OFFSETS``). A centre is simple iff the object in its 26-neighbourhood is one
    26-component and the background in its 18-neighbourhood has exactly one
    6-component that touches a face of the centre (Bertrand & Malandain, 1994).
    Each distinct configuration is decided once per process.
    """
    codes = np.asarray(neighbourhoods, bool) @ _BITS
    unique, inverse = np.unique(codes, return_inverse=True)
    known = np.array([_SIMPLE.get(c, -1) for c in unique.tolist()], np.int8)
    new = known < 0
    if new.any():
        known[new] = _decide(unique[new])
        _SIMPLE.update(zip(unique[new].tolist(), known[new].tolist()))
    return known[inverse].astype(bool)


_BITS = (1 << np.arange(26)).astype(np.int64)
_SIMPLE: dict[int, int] = {}


def _decide(codes: np.ndarray) -> np.ndarray:
    obj = (codes[:, None] >> np.arange(26)) & 1 == 1
    lab = _component_labels(obj, _ADJ26)
    n_obj = (lab == np.arange(26)).sum(axis=1)
    lab6 = _component_labels(~obj[:, _N18], _ADJ6_18)[:, _FACE_IN_18]
    valid = lab6 < len(_N18)
    same_before = np.tril(lab6[:, :, None] == lab6[:, None, :], -1).any(axis=2)
    n_bg = (valid & ~same_before).sum(axis=1)
    return ((n_obj == 1) & (n_bg == 1)).astype(np.int8)


def cavities(mask: np.ndarray) -> int:
    """Background components (6-connected) enclosed by ``mask``."""
    return ndimage.label(np.pad(~np.asarray(mask, bool), 1, constant_values=True))[1] - 1


def components(mask: np.ndarray) -> int:
    """26-connected components of ``mask``."""
    return ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]


def genus(mask: np.ndarray) -> int:
    """Handles of the surface of ``mask`` (26/6): components + cavities - Euler number."""
    return topology_counts(mask)[2]


def is_ball(mask: np.ndarray) -> bool:
    """One 26-connected component, no cavities, no handles."""
    return topology_counts(mask) == (1, 0, 0)


def topology_counts(mask: np.ndarray) -> tuple[int, int, int]:
    """(26-connected components, cavities, handles) of ``mask``, each labelling done once."""
    mask = np.asarray(mask, bool)
    n, c = components(mask), cavities(mask)
    return n, c, int(n + c - euler_number(mask, connectivity=3))


def _window(shape: tuple[int, ...], b: int, c: int, db: int, dc: int) -> tuple[slice, ...]:
    """Corner (db, dc) of every 2x2 window in axes b and c, as one slice of the array."""
    sl = [slice(None)] * 3
    sl[b] = slice(db, shape[b] - 1 + db)
    sl[c] = slice(dc, shape[c] - 1 + dc)
    return tuple(sl)


def _critical_background(mask: np.ndarray) -> np.ndarray:
    """Background voxels in a configuration marching cubes finds ambiguous: a 2x2 face
    with object on one diagonal and background on the other, or a 2x2x2 cube whose only
    object (or only background) voxels are two opposite corners."""
    m = mask
    out = np.zeros_like(m)
    n0, n1, n2 = m.shape
    for a in range(3):  # faces normal to axis a: 2x2 windows in the other two axes
        b, c = (x for x in range(3) if x != a)
        p00, p11, p01, p10 = (m[_window(m.shape, b, c, db, dc)]
                              for db, dc in ((0, 0), (1, 1), (0, 1), (1, 0)))
        crit = (p00 & p11 & ~p01 & ~p10) | (~p00 & ~p11 & p01 & p10)
        for db, dc in ((0, 0), (1, 1), (0, 1), (1, 0)):
            out[_window(m.shape, b, c, db, dc)] |= crit
    corners = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]

    def cube(i: int, j: int, k: int) -> np.ndarray:
        return m[i:n0 - 1 + i, j:n1 - 1 + j, k:n2 - 1 + k]

    count = sum(cube(*c).astype(np.int8) for c in corners)
    for c in corners[:4]:  # the four body diagonals
        d = tuple(1 - x for x in c)
        crit = ((count == 2) & cube(*c) & cube(*d)) | ((count == 6) & ~cube(*c) & ~cube(*d))
        for x in corners:
            out[x[0]:n0 - 1 + x[0], x[1]:n1 - 1 + x[1], x[2]:n2 - 1 + x[2]] |= crit
    return out & ~m


def well_compose(mask: np.ndarray, allowed: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Voxels to add to ``mask`` (within ``allowed``), each a simple point, so that no
    ambiguous configuration is left: then marching cubes has nothing to decide and its
    surface has exactly the mask's 26/6 topology (it did not on ACDC patient031 ED
    ground truth: genus 2 for a mask of genus 0). Returns the added voxels; configurations
    that no simple point can resolve stay (the gate will tell)."""
    m = np.pad(np.asarray(mask, bool), 1)
    ok = np.pad(np.asarray(allowed, bool), 1)
    shape = m.shape
    offsets = _OFFSETS @ np.array([shape[1] * shape[2], shape[2], 1])
    parity = _parity(np.arange(m.size), shape, bits=(1, 2, 4))
    flat = m.reshape(-1)
    start = m.copy()
    for _ in range(rounds):
        cand = np.flatnonzero((_critical_background(m) & ok).reshape(-1))
        cand = cand[(cand > offsets.max()) & (cand < flat.size - offsets.max())]
        if not len(cand):
            break
        if not _flip_simple(flat, cand, parity[cand], offsets, True):
            break
    return (m & ~start)[1:-1, 1:-1, 1:-1]


def close_handles(mask: np.ndarray) -> np.ndarray:
    """Plugs that close the tunnels of ``mask``: mask | plugs is one solid of genus 0
    without cavities. Background is peeled farthest from the mask first, so each plug
    forms where its tunnel is narrowest. Returns the plug voxels (bool, mask's shape)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros_like(mask)
    lo = np.maximum(np.argwhere(mask).min(0) - 1, 0)
    hi = np.minimum(np.argwhere(mask).max(0) + 2, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    keep = np.pad(mask[box], 1)              # a border of background all round
    prio = ndimage.distance_transform_edt(~keep)
    solid = _start(keep, prio)
    _peel(solid, keep, prio)
    plugs = np.zeros_like(mask)
    plugs[box] = (solid & ~keep)[1:-1, 1:-1, 1:-1]
    return plugs


def _start(keep: np.ndarray, prio: np.ndarray) -> np.ndarray:
    """A solid of ball topology holding ``keep``, as tight as cheaply possible: the
    complement of the background farther than r voxels from ``keep`` that reaches the
    border, for the smallest r in 4, 8, 16 giving a ball; else the whole box (minus its
    border), which is always one."""
    border = np.ones_like(keep)
    border[1:-1, 1:-1, 1:-1] = False
    for r in (4, 8, 16):
        comps, _ = ndimage.label((prio > r) | border)
        outer = np.isin(comps, np.unique(comps[border]))
        if is_ball(~outer):
            return ~outer
    return ~border


def _peel(solid: np.ndarray, keep: np.ndarray, prio: np.ndarray) -> None:
    """Remove from ``solid`` (in place) its simple points outside ``keep``, in
    descending integer levels of ``prio``, until none is left."""
    shape = solid.shape
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    offsets = _OFFSETS @ strides
    face_offsets = offsets[_FACE]
    flat = solid.reshape(-1)
    cand = np.flatnonzero(solid & ~keep)
    level_of = np.floor(prio.reshape(-1)[cand])
    parity = _parity(cand, shape)
    top = int(level_of.max()) if len(cand) else 0
    for level in [*range(top, 0, -1), -1]:
        while True:
            idx = np.flatnonzero(flat[cand] & (level_of >= level))
            if not _flip_simple(flat, cand[idx], parity[idx], offsets, False, face_offsets):
                break
        still = flat[cand]
        cand, level_of, parity = cand[still], level_of[still], parity[still]


def _flip_simple(flat: np.ndarray, voxels: np.ndarray, parity: np.ndarray, offsets: np.ndarray,
                 value: bool, front: np.ndarray | None = None) -> int:
    """Set ``flat[v] = value`` for every voxel of ``voxels`` that is a simple point, one
    parity subfield at a time (``parity``: each voxel's subfield), so that parallel
    flips equal sequential ones. ``front``: face offsets; only voxels with a face
    neighbour already at ``value`` are flipped, judged afresh for each subfield so that
    one sweep can advance more than one voxel. Returns how many were flipped."""
    flipped = 0
    for sub in range(8):
        these = voxels[parity == sub]
        if front is not None:
            these = these[(flat[these[:, None] + front] == value).any(axis=1)]
        if len(these):
            simple = simple_points(flat[these[:, None] + offsets])
            flat[these[simple]] = value
            flipped += int(simple.sum())
    return flipped


def _parity(flat_index: np.ndarray, shape: tuple[int, ...],
            bits: tuple[int, int, int] = (4, 2, 1)) -> np.ndarray:
    """Subfield (0-7) of each voxel from the parities of its three indices; ``bits`` sets
    the order subfields are visited in (the peel and the corner filling were measured
    with different orders, and the order decides which of two simple points goes first)."""
    i, j, k = np.unravel_index(flat_index, shape)
    return (i % 2) * bits[0] + (j % 2) * bits[1] + (k % 2) * bits[2]

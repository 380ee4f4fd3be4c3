"""The quality gate: is a triangle surface a valid closed shell of genus 0 in world mm?

Computed for every mesh and written to its report. Each item is a dict with the
measured ``value``, its ``limit`` and ``passed``; the report's ``passed`` is their AND.
The self-intersection test is our own (AABB broad phase, Moller-Trumbore narrow
phase), so it needs no AGPL/GPL code.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .tags import TAG_NAMES, face_normals

#: Relative difference allowed between mesh and voxel volume.
VOLUME_TOLERANCE = 0.02
#: Smallest triangle angle (degrees) accepted.
MIN_ANGLE_DEG = 5.0


def edge_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Undirected edge multiplicities, directed duplicates count, number of edges."""
    directed = np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)
    n = np.int64(faces.max()) + 1 if len(faces) else np.int64(1)
    und = np.sort(directed, axis=1).astype(np.int64)
    # Edges as single int64 keys: np.unique on rows (axis=0) is ten times slower.
    _, counts = np.unique(und[:, 0] * n + und[:, 1], return_counts=True)
    _, dcounts = np.unique(directed[:, 0].astype(np.int64) * n + directed[:, 1],
                           return_counts=True)
    return counts, dcounts, len(counts)


def components(faces: np.ndarray, n_vertices: int) -> int:
    """Connected components of the surface (faces joined through shared vertices)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    used = np.unique(faces)
    i = faces[:, [0, 1, 2]].ravel()
    j = faces[:, [1, 2, 0]].ravel()
    g = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices))
    _, lab = connected_components(g, directed=False)
    return int(len(np.unique(lab[used])))


def min_angles(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smallest interior angle (degrees) of each face."""
    p = verts[faces]
    out = np.full(len(faces), 180.0)
    for k in range(3):
        u = p[:, (k + 1) % 3] - p[:, k]
        w = p[:, (k + 2) % 3] - p[:, k]
        c = np.einsum("ij,ij->i", u, w) / np.maximum(
            np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1), 1e-300)
        out = np.minimum(out, np.degrees(np.arccos(np.clip(c, -1, 1))))
    return out


def _segment_hits(p0, p1, a, b, c, tol=1e-7) -> np.ndarray:
    """Does segment p0-p1 cross triangle abc strictly inside both (vectorised)?"""
    e1, e2, d = b - a, c - a, p1 - p0
    h = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, h)
    ok = np.abs(det) > 1e-12 * np.maximum(np.einsum("ij,ij->i", d, d), 1e-30)
    f = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = p0 - a
    u = f * np.einsum("ij,ij->i", s, h)
    q = np.cross(s, e1)
    v = f * np.einsum("ij,ij->i", d, q)
    t = f * np.einsum("ij,ij->i", e2, q)
    return ok & (u > tol) & (v > tol) & (u + v < 1 - tol) & (t > tol) & (t < 1 - tol)


def _close_pairs(p: np.ndarray) -> np.ndarray:
    """Face pairs (i < j) whose bounding spheres about the centroids meet and whose
    bounding boxes overlap: a superset of the pairs that can cross. The common radius
    is the 99th percentile; the few larger faces are queried with their own."""
    centres = p.mean(axis=1)
    radius = np.linalg.norm(p - centres[:, None], axis=2).max(axis=1)
    r0 = float(np.percentile(radius, 99))
    tree = cKDTree(centres)
    pairs = [tree.query_pairs(2 * r0, output_type="ndarray")]
    is_big = radius > r0
    big = np.flatnonzero(is_big)
    if len(big):
        near = tree.query_ball_point(centres[big], radius[big] + radius.max())
        j = np.concatenate([np.asarray(n, np.int64) for n in near])
        i = np.repeat(big, [len(n) for n in near])
        # Not already found within 2 r0, and each pair of two big faces once.
        new = (np.linalg.norm(centres[i] - centres[j], axis=1) > 2 * r0) \
            & ~(is_big[j] & (j <= i))
        i, j = i[new], j[new]
        pairs.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
    pairs = np.concatenate(pairs).astype(np.int64)
    # Boxes in float32 (half the memory traffic), widened by far more than its rounding.
    lo = np.ascontiguousarray((p.min(axis=1) - 1e-4).T, np.float32)
    hi = np.ascontiguousarray((p.max(axis=1) + 1e-4).T, np.float32)
    i, j = pairs[:, 0], pairs[:, 1]
    for a in range(3):  # axis by axis, each on the survivors of the last
        ok = (lo[a][i] <= hi[a][j]) & (lo[a][j] <= hi[a][i])
        i, j = i[ok], j[ok]
    return np.stack([i, j], axis=1)


def flat_stars(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per vertex: is its ring of faces the graph of a function over the plane normal to
    the vertex normal? (Every face positively oriented in that projection, projected
    angles summing to one turn.) Two faces of such a ring cannot cross."""
    p = verts[faces]
    fn = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    idx = faces.ravel()
    vn = np.stack([np.bincount(idx, np.repeat(fn[:, c], 3), minlength=len(verts))
                   for c in range(3)], axis=1)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-300)
    bad = np.zeros(len(verts), bool)
    turn = np.zeros(len(verts))
    for k in range(3):
        v = faces[:, k]
        n = vn[v]
        bad[v[np.einsum("ij,ij->i", fn, n) <= 0]] = True
        u = p[:, (k + 1) % 3] - p[:, k]
        w = p[:, (k + 2) % 3] - p[:, k]
        u -= np.einsum("ij,ij->i", u, n)[:, None] * n
        w -= np.einsum("ij,ij->i", w, n)[:, None] * n
        angle = np.arctan2(np.linalg.norm(np.cross(u, w), axis=1), np.einsum("ij,ij->i", u, w))
        turn += np.bincount(v, angle, minlength=len(verts))
    return ~bad & (turn < 3 * np.pi)


def self_intersections(verts: np.ndarray, faces: np.ndarray, chunk: int = 200_000) -> int:
    """Number of face pairs that cross each other (folded neighbours included)."""
    p = verts[faces]
    pairs = _close_pairs(p)
    if len(pairs) == 0:
        return 0
    flat = flat_stars(verts, faces)
    hits = 0
    for s in range(0, len(pairs), chunk):
        i, j = pairs[s:s + chunk, 0], pairs[s:s + chunk, 1]
        fi, fj = faces[i], faces[j]
        shared = (fi[:, :, None] == fj[:, None, :])
        n_shared = shared.sum(axis=(1, 2))
        # No shared vertex: any edge of one crossing the other triangle.
        m = n_shared == 0
        a, b = p[i[m]], p[j[m]]
        crossed = np.zeros(int(m.sum()), bool)
        for k in range(3):
            crossed |= _segment_hits(a[:, k], a[:, (k + 1) % 3], b[:, 0], b[:, 1], b[:, 2])
            crossed |= _segment_hits(b[:, k], b[:, (k + 1) % 3], a[:, 0], a[:, 1], a[:, 2])
        hits += int(crossed.sum())
        # One shared vertex: only the edges opposite to it can cross the other triangle,
        # and not at all where the vertex's ring of faces is flat.
        m = n_shared == 1
        ci = np.argmax(shared.any(axis=2), axis=1)  # corner of the shared vertex in face i
        m[m] = ~flat[fi[m, ci[m]]]
        if m.any():
            ii, jj, sh = i[m], j[m], shared[m]
            ci = ci[m]
            cj = np.argmax(sh.any(axis=1), axis=1)
            r = np.arange(len(ii))
            pi, pj = p[ii], p[jj]
            hit = _segment_hits(pi[r, (ci + 1) % 3], pi[r, (ci + 2) % 3],
                                pj[:, 0], pj[:, 1], pj[:, 2])
            hit |= _segment_hits(pj[r, (cj + 1) % 3], pj[r, (cj + 2) % 3],
                                 pi[:, 0], pi[:, 1], pi[:, 2])
            hits += int(hit.sum())
        # A shared edge: crossing only if folded flat onto each other.
        m = n_shared == 2
        if m.any():
            n, _ = face_normals(verts, faces[np.concatenate([i[m], j[m]])])
            k = int(m.sum())
            hits += int((np.einsum("ij,ij->i", n[:k], n[k:]) < -0.999).sum())
    return hits


def quality_report(verts: np.ndarray, faces: np.ndarray, face_tags: np.ndarray | None = None,
                   *, voxel_volume_mm3: float | None = None,
                   min_angle_deg: float = MIN_ANGLE_DEG) -> dict:
    """The gate items (JSON-serialisable) and ``passed``; see the module docstring."""
    counts, dcounts, n_edges = edge_counts(faces)
    boundary = int((counts == 1).sum())
    non_manifold = int((counts > 2).sum())
    n_comp = components(faces, len(verts))
    n_verts = int(len(np.unique(faces)))
    chi = n_verts - n_edges + len(faces)
    volume = float(np.einsum("ij,ij->i", verts[faces[:, 0]],
                             np.cross(verts[faces[:, 1]], verts[faces[:, 2]])).sum() / 6.0)
    angles = min_angles(verts, faces)
    items: dict[str, dict] = {
        "watertight": {"value": boundary == 0 and non_manifold == 0,
                       "boundary_edges": boundary, "limit": True},
        "consistent_winding": {"value": bool((dcounts == 1).all()) and volume > 0,
                               "limit": True},
        "non_manifold_edges": {"value": non_manifold, "limit": 0},
        "euler_characteristic": {"value": int(chi), "limit": 2, "components": n_comp,
                                 "genus": (2 * n_comp - chi) / 2 if n_comp else None},
        "self_intersections": {"value": self_intersections(verts, faces), "limit": 0},
        "min_triangle_angle_deg": {"value": round(float(angles.min()), 3),
                                   "limit": min_angle_deg,
                                   "p01_deg": round(float(np.percentile(angles, 1)), 3)},
    }
    for name in ("watertight", "consistent_winding"):
        items[name]["passed"] = bool(items[name]["value"])
    items["non_manifold_edges"]["passed"] = non_manifold == 0
    items["euler_characteristic"]["passed"] = chi == 2 and n_comp == 1
    items["self_intersections"]["passed"] = items["self_intersections"]["value"] == 0
    items["min_triangle_angle_deg"]["passed"] = bool(angles.min() >= min_angle_deg)
    if voxel_volume_mm3:
        rel = (volume - voxel_volume_mm3) / voxel_volume_mm3
        items["volume"] = {"value": round(rel, 5), "limit": VOLUME_TOLERANCE,
                           "mesh_ml": round(volume / 1000, 3),
                           "voxels_ml": round(voxel_volume_mm3 / 1000, 3),
                           "passed": bool(abs(rel) <= VOLUME_TOLERANCE)}
    report: dict = {"passed": all(item["passed"] for item in items.values()), **items}
    report["vertices"], report["faces"] = int(len(verts)), int(len(faces))
    if face_tags is not None:
        _, area = face_normals(verts, faces)
        report["tag_area_mm2"] = {TAG_NAMES.get(int(t), str(int(t))):
                                  round(float(area[face_tags == t].sum()), 1)
                                  for t in np.unique(face_tags)}
    report["failed"] = [k for k, v in items.items() if not v["passed"]]
    return report

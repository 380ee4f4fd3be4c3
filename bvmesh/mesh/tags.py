"""Face tags: which side of the myocardium each triangle faces.

A face is tagged by the label found just outside it (along its outward normal): LV
blood pool -> LV endocardium, RV blood pool -> RV endocardium, background ->
epicardium. Faces on the base plane are the base. A neighbour vote then cleans the
few faces whose probe landed in the myocardium itself or across a thin gap.
Markers are ldrb's defaults, so meshes go straight into ldrb / cardiac-geometries.
"""

from __future__ import annotations

import numpy as np

from ..labels import LV_POOL, RV_POOL

BASE, RV, LV, EPI = 10, 20, 30, 40
#: Marker -> name, as ldrb's ``markers`` dict spells them.
TAG_NAMES: dict[int, str] = {BASE: "base", RV: "rv", LV: "lv", EPI: "epi"}
MARKERS: dict[str, int] = {name: tag for tag, name in TAG_NAMES.items()}


def face_neighbours(faces: np.ndarray) -> np.ndarray:
    """(M, 3) index of the face across each edge (edge k runs from corner k to k+1);
    -1 where an edge has no partner. Non-manifold edges pair their faces arbitrarily."""
    m = len(faces)
    e = np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)
    key = np.sort(e, axis=1)
    key = key[:, 0].astype(np.int64) * (int(faces.max()) + 1) + key[:, 1]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    same = np.flatnonzero(ks[1:] == ks[:-1])
    out = np.full(3 * m, -1, np.int64)
    a, b = order[same], order[same + 1]
    out[a] = b // 3
    out[b] = a // 3
    return out.reshape(m, 3)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals and areas (mm^2) of the faces."""
    n = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    norm = np.linalg.norm(n, axis=1)
    return n / np.maximum(norm, 1e-12)[:, None], norm / 2


def probe_labels(points: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Label of the voxel nearest to each world point (0 outside the grid)."""
    idx = np.rint((points - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < np.array(labels.shape)), axis=1)
    out = np.zeros(len(points), labels.dtype)
    out[ok] = labels[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
    return out


def tag_faces(verts: np.ndarray, faces: np.ndarray, labels: np.ndarray, affine: np.ndarray,
              *, base_faces: np.ndarray, probe_mm: float, votes: int = 4) -> np.ndarray:
    """ldrb marker of every face (see module docstring). ``probe_mm``: how far outside
    each face centroid the label is read (about one voxel)."""
    normals, _ = face_normals(verts, faces)
    centres = verts[faces].mean(axis=1)
    outside = probe_labels(centres + probe_mm * normals, labels, affine)
    tags = np.zeros(len(faces), np.int64)
    tags[outside == 0] = EPI
    tags[outside == LV_POOL] = LV
    tags[outside == RV_POOL] = RV
    tags[base_faces] = BASE
    nb = face_neighbours(faces)
    free = ~base_faces
    choices = np.array([RV, LV, EPI])
    for _ in range(votes):
        padded = np.append(tags, 0)
        group = np.concatenate([tags[:, None], padded[nb]], axis=1)  # self + 3 neighbours
        counts = np.stack([(group == c).sum(axis=1) for c in choices], axis=1)
        own = (tags[:, None] == choices[None, :]).astype(int)
        best = choices[np.argmax(2 * counts + own, axis=1)]  # ties keep the face's own tag
        has = counts.max(axis=1) > 0
        new = np.where(free & has, best, tags)
        if np.array_equal(new, tags):
            break
        tags = new
    tags[tags == 0] = EPI
    return tags

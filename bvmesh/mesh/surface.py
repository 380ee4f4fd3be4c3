"""From a myocardium mask to a closed, consistently wound triangle surface in world mm.

The field meshed is the mask's signed distance (mm, negative inside, zero on voxel
faces) intersected with the base half-space, so the base is an exact planar cut.
Marching cubes runs in voxel-index space; the full 4x4 affine then takes the vertices
to world mm (skimage's ``spacing=`` would ignore direction and origin).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

#: Offset (mm) of the iso-level: exactly 0 lands on grid values and makes non-manifold edges.
ISO_OFFSET = 1e-3
#: Taubin's pass band: lambda > 0 shrinks, mu < -lambda inflates back.
TAUBIN_LAMBDA, TAUBIN_MU = 0.5, -0.53


def extrude_across_plane(labels: np.ndarray, plane_dist: np.ndarray, affine: np.ndarray,
                         normal: np.ndarray, spacing: float, depth_voxels: int = 3) -> np.ndarray:
    """Copy the cross-section at the base plane outward along the normal.

    Voxels just above the plane take the label found half a voxel below the plane
    along ``-normal``; the cut then meets a prism, not a rounded rim, whatever the
    plane's angle to the grid. Voxels further above become background.
    """
    out = labels.copy()
    above = plane_dist > 0
    near = above & (plane_dist <= depth_voxels * spacing)
    out[above & ~near] = 0
    idx = np.argwhere(near).astype(float)
    if len(idx):
        world = idx @ affine[:3, :3].T + affine[:3, 3]
        back = world - (plane_dist[near][:, None] + 0.5 * spacing) * normal
        src = np.rint((back - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(int)
        src = np.clip(src, 0, np.array(labels.shape) - 1)
        out[near] = labels[src[:, 0], src[:, 1], src[:, 2]]
    return out


def signed_distance(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside) of a 3D mask, zero on its voxel faces.

    Exact Euclidean distances matter, not only their signs: on cubes with an ambiguous
    face or interior, marching cubes decides from the corner values whether the object
    joins across, and with these values its surface has the 26/6 topology of the mask
    (so bvmesh.mesh.topology's genus is the surface's). A cheaper +-h/2 field gave
    genus 5 on a mask of genus 0 (ACDC patient006 ED ground truth).
    """
    spacing = np.asarray(spacing, float)
    half = 0.5 * float(np.mean(spacing))
    # On an isotropic grid (every segment mesh's) the distances in voxels, scaled: the same
    # values, without scipy's per-axis float64 products over the whole grid.
    iso = bool(np.allclose(spacing, spacing[0]))
    sampling, scale = (None, float(spacing[0])) if iso else (spacing, 1.0)
    out = ndimage.distance_transform_edt(~mask, sampling=sampling) * scale - half
    inside = ndimage.distance_transform_edt(mask, sampling=sampling) * scale - half
    return np.where(mask, -inside, out).astype(np.float32)


def march(field: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of ``field`` < 0 in index space, vertices mapped to world mm, faces
    wound so that the enclosed volume is positive whatever the sign of det(affine)."""
    from skimage.measure import marching_cubes

    verts, faces, _, _ = marching_cubes(field, level=ISO_OFFSET, allow_degenerate=False,
                                        method="lewiner")
    verts = verts.astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]
    faces = faces.astype(np.int64)
    if signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces


def signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume (mm^3) by the divergence theorem; positive when wound outward."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def vertex_adjacency(faces: np.ndarray, n: int) -> sp.csr_matrix:
    i = faces[:, [0, 1, 2, 1, 2, 0]].ravel()
    j = faces[:, [1, 2, 0, 0, 1, 2]].ravel()
    adj = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    adj.data[:] = 1.0
    return adj


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    idx = faces.ravel()
    # bincount per coordinate: np.add.at is several times slower on large meshes.
    vn = np.stack([np.bincount(idx, np.repeat(fn[:, c], 3), minlength=len(verts))
                   for c in range(3)], axis=1)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def smooth(verts: np.ndarray, faces: np.ndarray, *, on_plane: np.ndarray,
           point: np.ndarray, normal: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Taubin smoothing that keeps the volume and the base plane.

    Vertices on the base plane move only within it (projected back after each step).
    After smoothing, the volume lost or gained is restored by a uniform offset along
    the vertex normals of the off-plane vertices (exact to well under 0.1 %).
    """
    adj = vertex_adjacency(faces, len(verts))
    deg = np.asarray(adj.sum(axis=1)).ravel()
    lap = sp.diags(1.0 / np.maximum(deg, 1)) @ adj
    v = verts.copy()
    target = signed_volume(verts, faces)

    def to_plane(x):
        x[on_plane] -= np.outer((x[on_plane] - point) @ normal, normal)
        return x

    for _ in range(iterations):
        for w in (TAUBIN_LAMBDA, TAUBIN_MU):
            v = to_plane(v + w * (lap @ v - v))
    free = ~on_plane
    for _ in range(3):
        vn = vertex_normals(v, faces)
        fa = np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]],
                                     v[faces[:, 2]] - v[faces[:, 0]]), axis=1) / 2
        area = float(fa[free[faces].all(axis=1)].sum()) or float(fa.sum())
        delta = (target - signed_volume(v, faces)) / area
        v[free] += delta * vn[free]
    return v


def relax(verts: np.ndarray, faces: np.ndarray, *, on_plane: np.ndarray, point: np.ndarray,
          normal: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Tangential relaxation: move each vertex, within its tangent plane, to the
    area-weighted mean of its faces' centroids. Evens out the slivers smoothing leaves
    without changing the shape (the plain mean of the neighbours made the worst one
    worse on ACDC patient037 ES: 4.9 -> 3.5 degrees)."""
    v = verts.copy()
    idx = faces.ravel()
    for _ in range(iterations):
        p = v[faces]
        weight = np.repeat(np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]),
                                          axis=1), 3)
        centre = np.repeat(p.mean(axis=1), 3, axis=0)
        total = np.maximum(np.bincount(idx, weight, minlength=len(v)), 1e-300)
        d = np.stack([np.bincount(idx, weight * centre[:, c], minlength=len(v)) for c in range(3)],
                     axis=1) / total[:, None] - v
        vn = vertex_normals(v, faces)
        d -= np.einsum("ij,ij->i", d, vn)[:, None] * vn
        v = v + d
        v[on_plane] -= np.outer((v[on_plane] - point) @ normal, normal)
    return v

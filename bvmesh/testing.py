"""Analytic biventricular phantoms with exact ground truth, for tests, benchmarks and scripts
(``from bvmesh.testing import make_phantom``, as scikit-image ships ``skimage.data``).

The heart is built in its own frame (mm): z is the long axis, the base plane is z = 0
and the apex points toward -z. The LV is a half ellipsoidal shell, the RV pool a
crescent (an ellipsoid offset toward +x, minus the LV) closed by a thin free wall.
The frame is placed in world (RAS mm) by a rotation and an origin, and sampled on any
voxel grid: thick or isotropic slices, oblique directions, either determinant sign.
Slice boundaries are placed so that one falls exactly on the base plane, so the
label map's own base is the analytic one.

Labels follow bvmesh.labels: 0 background, 1 LV pool, 2 LV myo, 3 RV pool, 4 RV myo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .labels import LV_MYO, LV_POOL

#: Ellipsoids of the heart frame: centre (mm) and semi-axes (mm).
LV_ENDO = ((0.0, 0.0, 0.0), (20.0, 20.0, 45.0))
LV_EPI = ((0.0, 0.0, 0.0), (28.0, 28.0, 53.0))
RV_ENDO = ((10.0, 0.0, 0.0), (34.0, 30.0, 38.0))

#: ldrb markers, as in bvmesh.mesh.
BASE, RV, LV, EPI = 10, 20, 30, 40


@dataclass(frozen=True)
class Phantom:
    """A label map, its affine, and the analytic myocardium surface it samples."""

    labels: np.ndarray  # uint8 (i, j, k)
    affine: np.ndarray  # voxel index -> world RAS mm
    truth_points: np.ndarray  # (P, 3) world mm, dense samples of the true myocardium surface
    truth_tags: np.ndarray  # (P,) ldrb marker of each truth point
    base_point: np.ndarray  # world mm, on the base plane
    base_normal: np.ndarray  # unit, from apex toward base
    slice_axis: int
    rv_wall_mm: float

    @property
    def base_plane(self) -> tuple[np.ndarray, np.ndarray]:
        return self.base_point, self.base_normal


#: Grey value per label (background, LV pool, LV myo, RV pool, RV myo) of
#: :func:`phantom_image`: bright pools, dark muscle, as in a bSSFP cine.
LABEL_INTENSITY = np.array([20.0, 220.0, 90.0, 200.0, 80.0])
NOISE_SD = 8.0
#: Background texture of :func:`phantom_image`: SD (grey values) and smoothness (voxels).
TISSUE_SD, TISSUE_SIGMA = 6.0, 2.0


def rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix from x-y-z Euler angles in degrees."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _inside(points: np.ndarray, ellipsoid, grow: float = 0.0) -> np.ndarray:
    centre, semi = ellipsoid
    q = (points - np.asarray(centre)) / (np.asarray(semi) + grow)
    return np.einsum("...i,...i->...", q, q) < 1.0


def _contracted(ellipsoid, scale: float):
    """The ellipsoid with its short-axis semi-axes scaled (a contracting cavity)."""
    centre, (a, b, c) = ellipsoid
    return centre, (a * scale, b * scale, c)


def heart_labels(p: np.ndarray, rv_wall_mm: float, pool_scale: float = 1.0) -> np.ndarray:
    """Labels at heart-frame points ``p`` (..., 3) in mm; ``pool_scale`` < 1 contracts
    the cavities in the short axis (the LV fully, the RV by half as much), as in systole.
    The LV epicardium follows so that the wall's section keeps its area (myocardium is
    nearly incompressible): it thickens as the cavity shrinks."""
    below = p[..., 2] <= 0.0
    ratio = LV_ENDO[1][0] / LV_EPI[1][0]
    epi_scale = float(np.sqrt(1 - ratio ** 2 * (1 - pool_scale ** 2)))
    lv_endo = _inside(p, _contracted(LV_ENDO, pool_scale))
    lv_epi = _inside(p, _contracted(LV_EPI, epi_scale))
    rv_endo = _contracted(RV_ENDO, 1 - (1 - pool_scale) / 2)
    rv_in = _inside(p, rv_endo) & ~lv_epi
    rv_out = _inside(p, rv_endo, rv_wall_mm) & ~lv_epi & ~rv_in
    out = np.zeros(p.shape[:-1], np.uint8)
    out[rv_out & below] = 4
    out[lv_epi & below] = 2
    out[rv_in & below] = 3
    out[lv_endo & below] = 1
    return out


def _truth_surface(rv_wall_mm: float, step: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples of the myocardium's boundary and their tags, in the heart frame."""
    pts, tags = [], []

    def myo(q):
        lab = heart_labels(q, rv_wall_mm)
        return (lab == 2) | (lab == 4)

    for (centre, semi), grow in ((LV_ENDO, 0.0), (LV_EPI, 0.0), (RV_ENDO, 0.0),
                                 (RV_ENDO, rv_wall_mm)):
        a = np.asarray(semi) + grow
        n_t = int(np.pi * a.max() / step)
        theta = np.linspace(np.pi / 2, np.pi, n_t)  # z <= 0 half only
        rows = []
        for t in theta:
            r = np.sin(t) * max(a[0], a[1])
            n_p = max(int(2 * np.pi * r / step), 8)
            phi = np.linspace(0, 2 * np.pi, n_p, endpoint=False)
            rows.append(np.stack([a[0] * np.sin(t) * np.cos(phi), a[1] * np.sin(t) * np.sin(phi),
                                  np.full(n_p, a[2] * np.cos(t))], axis=1))
        q = np.concatenate(rows) + np.asarray(centre)
        g = (q - np.asarray(centre)) / a**2
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        eps = 0.05
        m_plus, m_minus = myo(q + eps * g), myo(q - eps * g)
        keep = m_plus ^ m_minus
        outward = np.where(m_minus[:, None], g, -g)[keep]
        q = q[keep]
        lab = heart_labels(q + eps * outward, rv_wall_mm)
        tag = np.full(len(q), EPI)
        tag[lab == 1] = LV
        tag[lab == 3] = RV
        pts.append(q)
        tags.append(tag)
    # The base: the plane z = 0 where the myocardium reaches it.
    xs = np.arange(-60, 70, step)
    gx, gy = np.meshgrid(xs, xs, indexing="ij")
    q = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    q = q[myo(q - [0, 0, 0.05])]
    pts.append(q)
    tags.append(np.full(len(q), BASE))
    return np.concatenate(pts), np.concatenate(tags)


def make_phantom(spacing: tuple[float, float, float] = (1.25, 1.25, 1.25), *,
                 slice_axis: int = 2, oblique: tuple[float, float, float] = (20.0, -15.0, 30.0),
                 det_sign: int = 1, rv_wall_mm: float = 3.5, base_at_start: bool = False,
                 origin: tuple[float, float, float] = (-12.0, 35.0, 80.0),
                 margin_mm: float = 6.0, truth: bool = True, pool_scale: float = 1.0) -> Phantom:
    """A biventricular phantom sampled on an oblique grid.

    ``spacing``: voxel size (mm) along each voxel axis; a thick stack has its large
    spacing on ``slice_axis``, which is aligned with the heart's long axis.
    ``oblique``: Euler angles (degrees) of the grid directions in world.
    ``det_sign``: -1 mirrors one in-plane voxel axis (a left-handed index frame).
    ``base_at_start``: put the base at slice index 0 rather than at the last slice.
    ``pool_scale``: contract the cavities (see :func:`heart_labels`; the truth surface is
    the relaxed heart's).
    """
    spacing = np.asarray(spacing, float)
    # Heart-frame axes as voxel axes: the long axis (z) runs along slice_axis.
    in_plane = [a for a in range(3) if a != slice_axis]
    perm = np.zeros((3, 3))  # columns: heart-frame direction of each voxel axis
    perm[0, in_plane[0]] = 1.0
    z_sign = -1.0 if base_at_start else 1.0
    # The sign of axis 1 makes det(affine) take the sign asked for, whatever z_sign is.
    perm[1, in_plane[1]] = float(np.sign(det_sign)) * z_sign * np.sign(np.linalg.det(
        np.eye(3)[:, [in_plane[0], in_plane[1], slice_axis]]))
    perm[2, slice_axis] = z_sign
    # Grid extent in the heart frame, with slice boundaries on z = 0.
    lo = np.array([-28.0, -34.0, -53.0]) - margin_mm
    hi = np.array([48.0, 34.0, 0.0]) + margin_mm
    lo[2] = -53.0 - margin_mm
    hi[2] = 0.0
    axis_of = [in_plane[0], in_plane[1], slice_axis]
    shape = [0, 0, 0]
    start_heart = np.zeros(3)  # heart-frame coordinate of voxel 0 along each heart axis
    for h in range(3):
        a = axis_of[h]
        n = int(np.ceil((hi[h] - lo[h]) / spacing[a]))
        if h == 2:
            # Centres at -s/2, -3s/2, ... so the top slice's outer face is z = 0; then
            # add two empty slices above the base, as a real stack has.
            n_below = n
            n = n_below + 2
            centres = -spacing[a] / 2 - spacing[a] * np.arange(n_below)[::-1]
            first = centres[0]
            shape[a] = n
            start_heart[h] = first if perm[2, a] > 0 else centres[-1] + 2 * spacing[a]
            continue
        shape[a] = n
        start_heart[h] = lo[h] if perm[h, a] > 0 else lo[h] + (n - 1) * spacing[a]
    rot = rotation(oblique)
    to_heart = np.eye(4)  # voxel -> heart frame
    to_heart[:3, :3] = perm * spacing
    to_heart[:3, 3] = start_heart
    heart_to_world = np.eye(4)
    heart_to_world[:3, :3] = rot
    heart_to_world[:3, 3] = origin
    affine = heart_to_world @ to_heart
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    p = idx @ to_heart[:3, :3].T + to_heart[:3, 3]
    labels = heart_labels(p, rv_wall_mm, pool_scale)
    if truth:
        pts, tags = _truth_surface(rv_wall_mm)
        pts = pts @ rot.T + np.asarray(origin)
    else:
        pts, tags = np.zeros((0, 3)), np.zeros(0, int)
    return Phantom(labels, affine, pts, tags, np.asarray(origin, float), rot[:, 2].copy(),
                   slice_axis, rv_wall_mm)


def hole_in_lv_wall(labels: np.ndarray, slice_axis: int, n_slices: int = 3) -> np.ndarray:
    """``labels`` with the LV wall cut through on ``n_slices`` middle slices, from the
    pool's centre out along one in-plane axis: a handle of the myocardium, which only
    topology repair removes."""
    out = np.moveaxis(labels.copy(), slice_axis, 0)
    mid = len(out) // 2
    for k in range(mid - n_slices // 2, mid + n_slices - n_slices // 2):
        rows, cols = np.nonzero(out[k] == LV_POOL)
        r, c = int(rows.mean()), int(cols.mean())
        wall = out[k, r - 2:r + 3, :c]
        wall[wall == LV_MYO] = 0
    return np.moveaxis(out, 0, slice_axis)


def beating_phantom(n_frames: int = 10, es_frame: int = 4, min_scale: float = 0.7,
                    **kwargs) -> list[Phantom]:
    """Phantoms of one heartbeat: frame 0 end-diastole (relaxed), the cavities contracting
    smoothly to ``min_scale`` at ``es_frame`` and relaxing back (``make_phantom``'s keywords
    for the grid; every frame shares it)."""
    phases = np.arange(n_frames)
    # A cosine down to ES and back up: ED at 0, ES at es_frame, no other extreme.
    up = np.where(phases <= es_frame, phases / es_frame,
                  1 + (phases - es_frame) / (n_frames - es_frame))
    scale = 1 - (1 - min_scale) * (1 - np.cos(np.pi * up)) / 2
    return [make_phantom(pool_scale=float(s), truth=False, **kwargs) for s in scale]


def phantom_image(phantom: Phantom, seed: int = 0) -> np.ndarray:
    """Intensity image of a phantom: a grey value per label plus Gaussian noise, and
    outside the heart a smooth texture (:data:`TISSUE_SD`), as lung, liver and fat give
    every slice of a real scan (an image of flat noise there would read as no image)."""
    rng = np.random.default_rng(seed)
    tissue = ndimage.gaussian_filter(rng.normal(0.0, 1.0, phantom.labels.shape), TISSUE_SIGMA)
    tissue *= TISSUE_SD / max(float(tissue.std()), 1e-9) * (phantom.labels == 0)
    image = LABEL_INTENSITY[phantom.labels] + tissue + rng.normal(0.0, NOISE_SD, phantom.labels.shape)
    return np.clip(image, 1.0, None).astype(np.float32)

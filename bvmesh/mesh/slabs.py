"""The volume a segmentation's mesh covers: every labelled slice through its whole slab.

A short-axis slice of thickness T stands for the slab from T/2 above its centre to T/2
below. The segmentation's isotropic stack starts at the centre of the base slice and
ends at the centre of the scan's last slice, so meshing it as it is loses half of the
base slab (5 mm of a 10 mm slice) and lets the apex end wherever the network stopped.
Here the stack is made to match the label map on the input grid:

- the base slab is completed: the base slice's section is continued up to its basal
  face, where the base plane lies;
- on the apex side nothing goes past the apical face of the last labelled slice; when
  that slice is the scan's last, its section is continued down to that face;
- a blood pool still open there means the labels stop before the apex (the scan ends,
  or the last slices were too faint to segment): it is closed by a rounded cap
  extrapolated beyond that face (bvmesh.mesh.apex; ``apex="flat"``: a lid at the face).
  Where only the RV is open, the LV closed by the labels forms the apex and the RV gets a
  lid at the face.

Between slice centres the network reads linearly interpolated images, and its boundary
moves in steps that repeat with every slice: slice terraces. The labels are smoothed
along the stack axis (one-hot, Gaussian of ``TERRACE_SIGMA`` x the slice spacing) before
anything else; at the slice centres, which is all the label map on the input grid
sees, a Gaussian that narrow changes next to nothing.

The stack grid is isotropic with index 0 at the base and increasing toward the apex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..labels import LV_POOL
from . import apex as apex_cap
from .prepare import plane_normal_of_axis

#: Gaussian sigma along the stack axis, as a fraction of the slice spacing: 0.3 leaves
#: 0.4 % weight one slice away.
TERRACE_SIGMA = 0.3


#: A base plane within ON_NODE voxels of a layer of grid nodes (a 10 mm slab on the
#: 1.25 mm stack puts it exactly there) is moved NODE_SHIFT voxels toward the apex:
#: marching cubes then puts wall vertices exactly on the cut, and the flattened cap
#: had slivers and crossed itself (a synthetic scan with 10 mm slices). 0.3 mm at most.
ON_NODE, NODE_SHIFT = 0.1, 0.25


@dataclass(frozen=True)
class SlabVolume:
    """Labels and affine to mesh, the base plane (point mm, unit normal toward the base),
    and what was done at the apex (None when the labels close it themselves)."""

    labels: np.ndarray
    affine: np.ndarray
    base_plane: tuple[np.ndarray, np.ndarray]
    apex: apex_cap.ApexCap | None
    notes: tuple[str, ...]


def slab_volume(stack_labels: np.ndarray, affine: np.ndarray, *, spacing_mm: float,
                slab_mm: float, last_labelled_mm: float, scan_end: bool,
                apex: str = "extrapolate") -> SlabVolume:
    """Complete the base and apex slabs of an isotropic stack segmentation.

    ``affine``: stack index -> world mm. ``slab_mm``: the input's slice spacing.
    ``last_labelled_mm``: distance from the base slice's centre to the centre of the most
    apical input slice that holds labels. ``scan_end``: that slice is the scan's last.
    """
    if apex not in apex_cap.APEX_MODES:
        raise ValueError(f"apex must be one of {apex_cap.APEX_MODES}, not {apex!r}")
    half = slab_mm / 2
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000
    up = int(np.ceil(half / spacing_mm)) + 1
    apex_face = (last_labelled_mm + half) / spacing_mm  # stack index of the apical face
    # A voxel reaches half a voxel past its centre: keep those that end by the face.
    n = max(1, int(np.floor(apex_face + 0.5 + 1e-6)))
    predicted = min(n, len(stack_labels))
    body = smooth_along_slices(stack_labels[:predicted], TERRACE_SIGMA * slab_mm / spacing_mm)
    if n > predicted:  # the scan's last slab, below its centre
        body = np.concatenate([body, np.repeat(body[-1:], n - predicted, axis=0)])
    labels = np.concatenate([np.repeat(body[:1], up, axis=0), body])
    shift = np.eye(4)
    shift[0, 3] = -up
    out_affine = affine @ shift
    notes = [f"base slab completed: the base slice's section continued {half:.1f} mm to its "
             "basal face, where the base plane lies"]
    cap = None
    if apex_cap.is_open(labels):
        where = "the scan ends" if scan_end else "the labels end before the scan does"
        if apex == "extrapolate" and not (labels[-1] == LV_POOL).any():
            # The LV closes within the labels: it forms the apex, and no RV reaches past
            # it, so an RV pool left open there is closed by a lid at the face (a cap
            # from the LV's profile had no height and left it open; ACDC patient087 ED).
            labels, cap = apex_cap.flat_lid(labels, voxel_ml)
            notes.append(f"{where} with the LV closed and the RV pool open: the RV closed by "
                         f"a lid at the last labelled slice's apical face ({cap.myocardium_ml:.2f}"
                         " ml of pool made myocardium)")
        elif apex == "extrapolate":
            labels, cap = apex_cap.extrapolate(labels, spacing_mm, voxel_ml,
                                               predicted=up + predicted)
            notes.append(f"{where}, with a blood pool open: a rounded apex cap extrapolated "
                         f"{cap.height_mm:.1f} mm beyond the last labelled slice's apical face "
                         f"({cap.myocardium_ml:.2f} ml myocardium, {cap.pool_ml:.2f} ml pool)")
        else:
            labels, cap = apex_cap.flat_lid(labels, voxel_ml)
            notes.append(f"{where}, with a blood pool open: closed by a flat lid at the last "
                         f"labelled slice's apical face ({cap.myocardium_ml:.2f} ml of pool made "
                         "myocardium)")
    # The base plane: the basal face of the base slice, normal from the apex toward the base.
    a = out_affine
    face = up - half / spacing_mm
    if abs(face - round(face)) < ON_NODE:
        face += NODE_SHIFT  # see NODE_SHIFT
    centre = np.array([face, (labels.shape[1] - 1) / 2, (labels.shape[2] - 1) / 2, 1.0])
    point = (a @ centre)[:3]
    normal = -plane_normal_of_axis(a, 0)
    return SlabVolume(labels, out_affine, (point, normal), cap, tuple(notes))


def smooth_along_slices(labels: np.ndarray, sigma: float) -> np.ndarray:
    """Labels re-decided after a Gaussian (``sigma`` voxels) along axis 0 of their one-hot."""
    if sigma <= 0 or len(labels) < 2:
        return labels
    values = np.unique(labels)
    stacked = np.stack([gaussian_filter1d((labels == v).astype(np.float32), sigma, axis=0,
                                          mode="nearest") for v in values])
    return values[np.argmax(stacked, axis=0)].astype(labels.dtype)

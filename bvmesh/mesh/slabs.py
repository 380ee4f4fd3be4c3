"""The volume a segmentation's mesh covers: every labelled slice through its whole slab.

A short-axis slice of thickness T stands for the slab from T/2 above its centre to T/2
below. The segmentation's isotropic stack starts at the centre of the base slice and
ends at the centre of the scan's last slice, so meshing it as it is loses half of the
base slab (5 mm of a 10 mm slice) and lets the apex end wherever the network stopped.
Here the stack is made to match the label map on the input grid:

- the base slab is completed: the base slice's section is continued up to its basal
  face, where the base plane lies;
- on the apex side nothing goes past the apical face of the last labelled slice; when
  that slice is the scan's last, its section is continued down to that face, otherwise
  (the heart ends within that slab) its shapes taper toward it at 45 degrees;
- a blood pool still open there means the labels stop before the apex (the scan ends,
  or the last slices were too faint to segment): it is closed by a rounded cap
  extrapolated beyond that face (bvmesh.mesh.apex; ``apex="flat"``: a lid at the face).
  Where only the RV is open, the LV closed by the labels forms the apex and the RV gets a
  lid at the face.

Between slice centres the stack is rebuilt from its sections at the labelled slices'
centres by shape-based interpolation (bvmesh.mesh.prepare.interpolate_sections, as
`bvmesh mesh` upsamples a thick-slice label map). The network's own slices between centres
read linearly blended images: their myocardium is wider than the centres' (mid-slab, a
mean 1.1 cm2 or 5 % more than the centres' interpolation on 40 held-out ACDC volumes:
scripts/stack_between_slices.py), so the mesh held a median 2 % more myocardium than the
label map (worst 8 %), and their boundary moves in steps that repeat with every slice
(slice terraces). The label map on the input grid sees only the centres; the mesh now
holds the same sections and nothing the centres do not show.

The stack grid is isotropic with index 0 at the base and increasing toward the apex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..labels import LV_POOL
from ..postprocess import from_one_hot, one_hot
from . import apex as apex_cap
from .prepare import ABSENT_FRACTION, interpolate_sections, plane_normal_of_axis

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
    body, predicted = between_sections(stack_labels, spacing_mm=spacing_mm, slab_mm=slab_mm,
                                       last_labelled_mm=last_labelled_mm, n=n,
                                       taper=not scan_end)
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


def between_sections(stack_labels: np.ndarray, *, spacing_mm: float, slab_mm: float,
                     last_labelled_mm: float, n: int, taper: bool) -> tuple[np.ndarray, int]:
    """The stack's first ``n`` slices, rebuilt from its sections at the labelled slices'
    centres by shape-based interpolation. Past the last centre its section is held to the
    slab's face where the scan ends there; where the scan goes on (``taper``: the next
    slice holds no labels, the heart ends within this slab) the shapes taper at 45
    degrees, as `bvmesh mesh` ends a label map's apex. Also returns how many leading
    slices reach no further than the last centre (the segmentation's own sections)."""
    last = int(round(last_labelled_mm / slab_mm))
    centres = np.arange(last + 1) * slab_mm / spacing_mm
    sections = np.stack([section_at(stack_labels, x) for x in centres])
    u = np.arange(n) * spacing_mm / slab_mm  # in slices from the base slice's centre
    lo = np.minimum(np.floor(u).astype(int), last)
    hi = np.minimum(lo + 1, last)
    t = np.clip(u - lo, 0.0, 1.0).astype(np.float32)[:, None, None]
    past = np.maximum(u - last, 0.0) * slab_mm if taper else np.zeros(n)
    body = interpolate_sections(sections, (spacing_mm, spacing_mm), lo=lo, hi=hi, t=t,
                                beyond=past.astype(np.float32)[:, None, None],
                                absent=ABSENT_FRACTION * slab_mm)
    return body.astype(stack_labels.dtype), min(n, int(np.floor(centres[-1] + 1e-6)) + 1)


def section_at(stack_labels: np.ndarray, x: float) -> np.ndarray:
    """The stack's section at fractional index ``x`` (clipped to the stack), decided as the
    label map on the input grid decides it: one-hot blended linearly between slices."""
    a = int(np.clip(np.floor(x), 0, len(stack_labels) - 1))
    b, w = min(a + 1, len(stack_labels) - 1), float(np.clip(x - a, 0.0, 1.0))
    if b == a or w < 1e-6:
        return stack_labels[a]
    blend = (1 - w) * one_hot(stack_labels[a])[1:] + w * one_hot(stack_labels[b])[1:]
    return from_one_hot(blend).astype(stack_labels.dtype)

"""Slice axis, the isotropic stack grid and its inverse, and base/apex from heart areas."""

from __future__ import annotations

import numpy as np
import pytest

from bvmesh import geometry, preprocess
from bvmesh.errors import GeometryError
from bvmesh.postprocess import one_hot

try:
    from conftest import heart_base_and_roi

    from bvmesh.testing import make_phantom, rotation
except ImportError:
    from bvmesh.testing import make_phantom, rotation
    from tests.conftest import heart_base_and_roi


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_find_slice_axis_takes_the_largest_spacing_wherever_it_is(axis):
    spacing = np.full(3, 1.37)
    spacing[axis] = 8.0
    shape = [160, 150, 140]
    shape[axis] = 200  # more voxels than the others: the spacing must win
    found, why = geometry.find_slice_axis(spacing, tuple(shape))
    assert found == axis and "largest spacing" in why


def test_find_slice_axis_isotropic_takes_the_fewest_voxels():
    found, why = geometry.find_slice_axis(np.array([1.25, 1.25, 1.25]), (90, 30, 100))
    assert found == 1 and "fewest voxels" in why


def oblique(spacing, det_sign=1):
    affine = np.eye(4)
    affine[:3, :3] = rotation((20.0, -15.0, 30.0)) @ np.diag([1.0, det_sign, 1.0]) * spacing
    affine[:3, 3] = (3.0, -4.0, 5.0)
    return affine


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize("apex_sign", [1, -1])
def test_stack_grid_starts_on_the_base_slice_and_inverts_exactly(slice_axis, apex_sign):
    spacing = np.full(3, 1.6)
    spacing[slice_axis] = 9.0
    shape = [60, 50, 40]
    shape[slice_axis] = 12
    affine = oblique(spacing, det_sign=-1)
    base = 8 if apex_sign < 0 else 3
    centre = (30.5, 21.0)
    grid = geometry.stack_grid(affine, tuple(shape), slice_axis=slice_axis, base_slice=base,
                               apex_sign=apex_sign, center=centre, size=128, spacing_mm=1.25)
    rows, cols = [a for a in range(3) if a != slice_axis]
    h = (128 - 1) / 2
    # Stack slice 0 lies on the base slice; the middle of the ROI on the given centre.
    for r, c in [(0, 0), (127, 5), (64, 100)]:
        point = grid.to_input @ np.array([0.0, r, c, 1.0])
        assert point[slice_axis] == pytest.approx(base)
    middle = grid.to_input @ np.array([0.0, h, h, 1.0])
    assert (middle[rows], middle[cols]) == pytest.approx(centre)
    # Stack slices go toward the apex in 1.25 mm steps, to the last input slice.
    one = grid.to_input @ np.array([1.0, h, h, 1.0])
    assert one[slice_axis] - base == pytest.approx(apex_sign * 1.25 / 9.0)
    end = shape[slice_axis] - 1 if apex_sign > 0 else 0
    last = grid.to_input @ np.array([grid.shape[0] - 1, h, h, 1.0])
    assert abs(last[slice_axis] - end) * 9.0 < 1.25 + 1e-9
    # Isotropic voxels in world mm, and the world affine is the input affine composed.
    np.testing.assert_allclose(np.linalg.norm(grid.affine[:3, :3], axis=0), 1.25)
    np.testing.assert_allclose(grid.affine, affine @ grid.to_input)
    # to_stack is the exact inverse.
    np.testing.assert_allclose(grid.to_stack @ grid.to_input, np.eye(4), atol=1e-12)
    # The input's slices on the stack: every 9 / 1.25 = 7.2 stack slices from the base,
    # toward the apex only.
    acquired = grid.acquired(slice_axis, shape[slice_axis])
    n_on = (shape[slice_axis] - 1 - base) if apex_sign > 0 else base
    np.testing.assert_allclose(np.sort(acquired), 7.2 * np.arange(n_on + 1), atol=1e-9)
    points = np.random.default_rng(0).uniform(0, 50, (20, 3))
    for p in points:
        back = grid.to_input @ (grid.to_stack @ np.array([*p, 1.0]))
        np.testing.assert_allclose(back[:3], p, atol=1e-9)


def test_stack_grid_refuses_a_bad_apex_sign():
    with pytest.raises(GeometryError):
        geometry.stack_grid(np.eye(4), (10, 10, 10), slice_axis=2, base_slice=0, apex_sign=0,
                            center=(5, 5))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("det_sign", [1, -1])
@pytest.mark.parametrize("slice_axis,base_at_start", [(2, False), (0, True)])
def test_labels_to_stack_and_back_reproduce_the_input(det_sign, slice_axis, base_at_start):
    """What pipeline.segment does with the network's output: stack grid -> input grid."""
    spacing = [1.5, 1.5, 1.5]
    spacing[slice_axis] = 10.0
    phantom = make_phantom(tuple(spacing), slice_axis=slice_axis, det_sign=det_sign,
                           base_at_start=base_at_start, truth=False)
    assert np.sign(np.linalg.det(phantom.affine)) == det_sign
    base, roi = heart_base_and_roi(phantom, base_at_start)
    shape = phantom.labels.shape
    grid = geometry.stack_grid(phantom.affine, shape, slice_axis=slice_axis, base_slice=base,
                               apex_sign=1 if base_at_start else -1, center=roi)
    channels = one_hot(phantom.labels)
    stack = np.stack([preprocess.resample(ch, grid, mode="constant") for ch in channels])
    # The heart is in the stack with its world volume; the stack starts at the base
    # slice's centre, so half of the base slice's myocardium lies above it.
    myo = np.isin(phantom.labels, (2, 4))
    voxel_ml = np.prod(np.linalg.norm(phantom.affine[:3, :3], axis=0)) / 1000
    expected_ml = (myo.sum() - 0.5 * np.take(myo, base, axis=slice_axis).sum()) * voxel_ml
    assert (stack[2] + stack[4]).sum() * 1.25 ** 3 / 1000 == pytest.approx(expected_ml, rel=0.05)
    back = preprocess.to_input_grid(stack[1:], grid, shape)
    background = 1.0 - back.sum(0)
    labels = np.where(back.max(0) > background, 1 + back.argmax(0), 0)
    # Inside the ROI (the stack's footprint on the input grid).
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    s = (np.c_[index, np.ones(len(index))] @ grid.to_stack.T)[:, :3]
    inside = np.all((s >= 0) & (s <= np.array(grid.shape) - 1), axis=1).reshape(shape)
    assert not phantom.labels[~inside].any()  # the whole heart is in the ROI
    for value in (1, 2, 3, 4):
        truth = (phantom.labels == value) & inside
        assert truth.any()
        assert dice(truth, (labels == value) & inside) > 0.95, value


def tapered(n: int = 14, first: int = 2, last: int = 11) -> np.ndarray:
    """Heart areas (mm^2): zero outside first..last, widest at ``first``, tapering to ``last``."""
    areas = np.zeros(n)
    areas[first:last + 1] = np.linspace(4000.0, 300.0, last - first + 1)
    return areas


def test_base_from_areas_in_both_directions():
    areas = tapered()
    assert geometry.base_from_areas(areas)[:2] == (2, 1)
    assert geometry.base_from_areas(areas[::-1])[:2] == (len(areas) - 1 - 2, -1)
    # A noisy tiny blob far from the heart is below 5 % of the largest area: ignored.
    noisy = tapered()
    noisy[13] = 50.0
    base, sign, why = geometry.base_from_areas(noisy)
    assert (base, sign) == (2, 1) and "slices 2..11" in why


def test_apex_sign_from_areas_and_no_heart():
    areas = tapered()
    assert geometry.apex_sign_from_areas(areas, 2) == 1
    assert geometry.apex_sign_from_areas(areas[::-1], 11) == -1
    with pytest.raises(GeometryError, match="no heart"):
        geometry.base_from_areas(np.zeros(10))


def test_apex_side_is_where_the_heart_runs_on_not_where_it_is_widest():
    # Two wide slices of atria above a base in the middle, a tapering ventricle below.
    areas = np.array([4800.0, 4600, 3300, 3000, 2600, 1100, 0, 0, 0, 0])
    assert geometry.apex_sign_from_areas(areas, 2) == 1
    assert geometry.apex_sign_from_areas(areas[::-1], 7) == -1

"""Metric functions against SimpleITK, brute force and hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from bvmesh import metrics


def oblique_affine(spacing, flip: bool = False) -> np.ndarray:
    """An oblique voxel -> world affine with orthogonal axes; ``flip`` makes det < 0."""
    a, b = 0.5, -0.3
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rot = rz @ rx
    if flip:
        rot = rot @ np.diag([1, -1, 1])
    aff = np.eye(4)
    aff[:3, :3] = rot * np.asarray(spacing, float)
    aff[:3, 3] = (-80.5, 12.25, 40.0)
    return aff


def random_blob(seed: int, shape=(34, 30, 16)) -> np.ndarray:
    """A smooth random mask (several lumps, holes possible), one voxel clear of the border."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), sigma=(3, 3, 1.5))
    mask = field > np.percentile(field, 60)
    mask[[0, -1], :, :] = mask[:, [0, -1], :] = mask[:, :, [0, -1]] = False
    return mask


def itk_image(mask: np.ndarray, spacing, affine: np.ndarray | None = None) -> sitk.Image:
    img = sitk.GetImageFromArray(np.transpose(mask.astype(np.uint8), (2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    if affine is not None:
        # ITK stores LPS; the direction only has to be orthonormal for distances.
        direction = affine[:3, :3] / np.asarray(spacing)
        img.SetDirection(direction.ravel().tolist())
    return img


def itk_contour(mask: np.ndarray, spacing) -> np.ndarray:
    """Surface voxels by ITK's BinaryContourImageFilter (independent of metrics.surface)."""
    c = sitk.BinaryContour(itk_image(mask, spacing), fullyConnected=False,
                           backgroundValue=0, foregroundValue=1)
    return np.transpose(sitk.GetArrayFromImage(c), (2, 1, 0)).astype(bool)


SPACING = (1.37, 0.9, 7.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_matches_simpleitk(seed):
    a, b = random_blob(seed), random_blob(seed + 100)
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(itk_image(a, SPACING), itk_image(b, SPACING))
    assert metrics.dice(b, a) == pytest.approx(f.GetDiceCoefficient(), abs=1e-12)
    assert 0.1 < metrics.dice(a, b) < 0.9  # the masks overlap partially: a real test


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_definition_matches_itk_contour(seed):
    a = random_blob(seed)
    assert np.array_equal(metrics.surface(a), itk_contour(a, SPACING))


@pytest.mark.parametrize("seed,flip", [(0, False), (1, True), (2, False)])
def test_hausdorff_and_assd_match_simpleitk(seed, flip):
    a, b = random_blob(seed), random_blob(seed + 100)
    affine = oblique_affine(SPACING, flip)
    f = sitk.HausdorffDistanceImageFilter()
    # ITK measures between whole sets; on the two surfaces it is the surface distance.
    f.Execute(itk_image(itk_contour(a, SPACING), SPACING, affine),
              itk_image(itk_contour(b, SPACING), SPACING, affine))
    got = metrics.surface_scores(a, b, metrics.voxel_spacing(affine))
    assert got.hd == pytest.approx(f.GetHausdorffDistance(), rel=1e-9)
    assert got.assd == pytest.approx(f.GetAverageHausdorffDistance(), rel=1e-9)
    assert got.hd > max(SPACING)  # anisotropy matters: a wrong axis order would differ


@pytest.mark.parametrize("flip", [False, True])
def test_hd95_matches_brute_force_in_world_coordinates(flip):
    a, b = random_blob(3), random_blob(4)
    affine = oblique_affine(SPACING, flip)

    def world(mask):
        idx = np.argwhere(itk_contour(mask, SPACING)).astype(float)
        return idx @ affine[:3, :3].T + affine[:3, 3]

    pa, pb = world(a), world(b)
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    got = metrics.surface_scores(a, b, metrics.voxel_spacing(affine))
    assert got.hd95 == pytest.approx(np.percentile(np.concatenate([d_ab, d_ba]), 95), rel=1e-9)
    assert got.hd == pytest.approx(max(d_ab.max(), d_ba.max()), rel=1e-9)
    assert got.assd == pytest.approx((d_ab.mean() + d_ba.mean()) / 2, rel=1e-9)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3])
def test_cubes_offset_by_k_voxels(axis, k):
    spacing = np.array(SPACING)
    a = np.zeros((24, 24, 16), bool)
    a[6:14, 6:14, 4:12] = True
    b = np.roll(a, k, axis=axis)
    s = metrics.surface_scores(b, a, spacing)
    assert s.hd == pytest.approx(k * spacing[axis])
    assert s.hd95 <= s.hd
    assert metrics.dice(a, b) == pytest.approx((8 - k) / 8)
    assert metrics.hausdorff(a, a, spacing) == 0.0
    assert metrics.assd(a, a, spacing) == 0.0


def test_cube_inside_cube_known_distances():
    # The inner box is 2 voxels in from both axis-0 faces and flush elsewhere: the
    # farthest outer surface voxel is 2 voxels (4 mm) from the inner surface.
    spacing = np.array([2.0, 1.0, 5.0])
    outer = np.zeros((20, 20, 12), bool)
    outer[4:16, 4:16, 2:10] = True
    inner = np.zeros_like(outer)
    inner[6:14, 4:16, 2:10] = True  # 2 voxels in along axis 0 on both sides
    s = metrics.surface_scores(inner, outer, spacing)
    assert s.hd == pytest.approx(2 * 2.0)


def test_empty_masks():
    empty = np.zeros((10, 10, 4), bool)
    full = empty.copy()
    full[2:5, 2:5, 1:3] = True
    assert math.isnan(metrics.dice(empty, empty))
    assert metrics.dice(empty, full) == 0.0
    s = metrics.surface_scores(empty, full, (1, 1, 1))
    assert math.isnan(s.hd) and math.isnan(s.hd95) and math.isnan(s.assd)
    with pytest.raises(ValueError):
        metrics.surface_distances(full, empty, (1, 1, 1))


def test_mask_touching_the_border_has_a_surface_there():
    m = np.ones((6, 6, 3), bool)
    assert metrics.surface(m).sum() == m.size - 4 * 4 * 1
    shifted = np.zeros_like(m)
    shifted[:5] = True
    assert metrics.hausdorff(m, shifted, (1.0, 1.0, 1.0)) == pytest.approx(1.0)


@pytest.mark.parametrize("flip", [False, True])
def test_volume_and_lv_mass(flip):
    affine = oblique_affine((1.5, 1.25, 8.0), flip)
    m = np.zeros((10, 10, 5), bool)
    m[:4, :5, :2] = True  # 40 voxels of 15 mm^3
    assert metrics.voxel_volume_ml(affine) == pytest.approx(0.015)
    assert metrics.volume_ml(m, affine) == pytest.approx(0.6)
    assert metrics.lv_mass_g(m, affine) == pytest.approx(0.63)


def test_slice_axis():
    assert metrics.slice_axis(np.array([1.5, 1.5, 10.0]), (200, 200, 10)) == 2
    assert metrics.slice_axis(np.array([8.0, 1.2, 1.2]), (9, 256, 256)) == 0
    # Isotropic: the axis with fewest voxels, as geometry.find_slice_axis decides.
    assert metrics.slice_axis(np.array([1.25, 1.25, 1.25]), (120, 40, 120)) == 1


@pytest.mark.parametrize("reverse", [False, True])
def test_labelled_range_finds_the_wide_end_as_base(reverse):
    heart = np.zeros((30, 30, 12), bool)
    for k, r in zip(range(2, 10), [12, 12, 11, 10, 8, 6, 4, 2]):  # base at slice 2
        heart[15 - r:15 + r, 15 - r:15 + r, k] = True
    if reverse:
        heart = heart[:, :, ::-1]
    rng = metrics.labelled_range(heart, 2)
    assert (rng.lo, rng.hi) == (2, 9)
    assert (rng.base, rng.apex) == ((9, 2) if reverse else (2, 9))
    assert rng.order[0] == rng.base and rng.order[-1] == rng.apex and len(rng.order) == 8
    with pytest.raises(ValueError):
        metrics.labelled_range(np.zeros_like(heart), 2)


def test_slicewise_dice_and_consistency():
    gt = np.zeros((8, 8, 4), bool)
    gt[2:6, 2:6, :3] = True
    pred = gt.copy()
    pred[2:4, 2:6, 1] = False  # half of slice 1 missing: Dice 2*8/(16+8)
    curve = metrics.slicewise_dice(pred, gt, 2)
    assert curve[:3] == pytest.approx([1.0, 2 / 3, 1.0])
    assert math.isnan(curve[3])
    assert metrics.slicewise_dice(pred, gt, 2, order=[2, 1, 0]) == pytest.approx([1, 2 / 3, 1])
    assert metrics.consistency(curve) == pytest.approx(1 / 3)
    assert math.isnan(metrics.consistency(np.array([0.9, np.nan])))


def test_isotropic_masks_interpolate_between_slices():
    affine = np.diag([1.25, 1.25, 5.0, 1.0])
    m = np.zeros((12, 12, 3), bool)
    m[2:10, 2:10, :2] = True
    m[4:8, 4:8, 2] = True
    (iso,) = metrics.isotropic_masks([m], affine, box=((0, 11), (0, 11), (0, 2)))
    assert iso.shape == (12, 12, 9)  # 10 mm along the slice axis in 1.25 mm steps
    # Slice centres keep their masks; between slices 1 and 2 (iso 4..8) the big square
    # shrinks half way, where the fraction reaches 0.5 (iso 6: 2.5 mm from slice 1).
    assert np.array_equal(iso[..., 0], m[..., 0]) and np.array_equal(iso[..., 8], m[..., 2])
    assert iso[3, 3, 6] and not iso[3, 3, 7] and iso[5, 5, 7]
    assert iso[..., 4].sum() == 64 and iso[..., 8].sum() == 16


def test_isotropic_masks_partial_box_and_anisotropic_in_plane():
    m = np.zeros((16, 16, 6), bool)
    m[3:12, 4:13, 1:5] = True
    a, b = metrics.isotropic_masks([m, m.copy()], np.diag([1.6, 2.5, 9.0, 1]),
                                   box=((1, 14), (1, 14), (1, 4)))
    assert np.array_equal(a, b)
    # The box spans 13 voxels of 1.6 mm, 13 of 2.5 mm and 3 of 9 mm.
    assert a.shape == (17, 27, 22)
    # Volume is preserved up to the half-voxel rounding at the faces.
    vol_iso = a.sum() * 1.25 ** 3
    vol = m[:, :, 1:5].sum() * 1.6 * 2.5 * 9.0 * 3 / 4  # 3 slice gaps between 4 slices
    assert vol_iso == pytest.approx(vol, rel=0.15)


def test_shear_detects_non_orthogonal_axes():
    assert metrics.shear(oblique_affine(SPACING)) < 1e-9
    sheared = np.eye(4)
    sheared[0, 2] = 0.2
    assert metrics.shear(sheared) > 0.1

"""Digital topology of masks: simple points, genus, and closing handles before meshing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import euler_number

from bvmesh.mesh import surface_mesh
from bvmesh.mesh.topology import _OFFSETS, close_handles, genus, is_ball, simple_points
from bvmesh.testing import make_phantom


def _betti(mask: np.ndarray) -> tuple[int, int, int]:
    """(26-components, cavities, Euler number) of a mask padded with background."""
    m = np.pad(mask, 1)
    return (ndimage.label(m, structure=np.ones((3, 3, 3)))[1], ndimage.label(~m)[1] - 1,
            int(euler_number(m, connectivity=3)))


def test_simple_points_agree_with_counting_components_tunnels_and_cavities():
    """Removing a point is simple iff it changes no component, tunnel or cavity: an
    oracle independent of the local characterisation the code uses."""
    rng = np.random.default_rng(7)
    cubes = np.concatenate([rng.random((600, 3, 3, 3)) < p for p in (0.3, 0.5, 0.7, 0.85)])
    cubes[:, 1, 1, 1] = True
    neighbourhoods = cubes[:, _OFFSETS[:, 0] + 1, _OFFSETS[:, 1] + 1, _OFFSETS[:, 2] + 1]
    got = simple_points(neighbourhoods)
    want = []
    for cube in cubes:
        without = cube.copy()
        without[1, 1, 1] = False
        want.append(_betti(cube) == _betti(without))
    assert np.array_equal(got, np.array(want))
    assert 0.1 < got.mean() < 0.9  # both answers are exercised


def _torus(n=40, major=12.0, minor=4.0):
    z, y, x = np.indices((n, n, n)) - (n - 1) / 2
    return (np.hypot(x, y) - major) ** 2 + z**2 <= minor**2


def test_genus_counts_handles_not_cavities():
    ball = np.zeros((20, 20, 20), bool)
    ball[4:16, 4:16, 4:16] = True
    shell = ball.copy()
    shell[7:13, 7:13, 7:13] = False
    two = np.concatenate([_torus(), _torus()], axis=0)
    assert genus(ball) == 0 and is_ball(ball)
    assert genus(shell) == 0 and not is_ball(shell)  # a cavity, but no handle
    assert genus(_torus()) == 1 and not is_ball(_torus())
    assert genus(two) == 2


def test_close_handles_plugs_the_torus_hole_and_nothing_else():
    torus = _torus()
    plugs = close_handles(torus)
    assert is_ball(torus | plugs)
    assert not (plugs & torus).any()
    # One thin membrane across the hole (a disc of radius 8: about 200 voxels), not the
    # whole hole filled (about 1500 voxels of 8-voxel radius and 9 slices).
    assert 0 < plugs.sum() < 400, plugs.sum()
    ball = np.zeros((24, 24, 24), bool)
    ball[4:18, 5:20, 6:15] = True
    assert not close_handles(ball).any()


def test_a_pierced_cup_is_plugged_at_its_hole():
    """A cup whose bottom has a small hole is a tube (genus 1): the plug belongs in the
    hole (narrowest), not across the wide opening."""
    z, y, x = np.indices((40, 40, 40)) - 19.5
    r = np.sqrt(x**2 + y**2 + z**2)
    cup = (r >= 12) & (r <= 15) & (z < 6)
    cup &= ~((np.hypot(x, y) < 3) & (z < -10))  # the hole at the bottom
    assert genus(cup) == 1
    plugs = close_handles(cup)
    assert is_ball(cup | plugs)
    where = np.argwhere(plugs)
    assert len(where) < 60 and (where[:, 0] - 19.5 < -10).all()


def _staple(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """The labels with a 1-voxel myocardial staple bridging a gap outside the
    epicardium: legs 4 voxels out from the wall on two slices 6 apart, joined by a bar."""
    out = labels.copy()
    mid = labels.shape[2] // 2
    row = labels.shape[1] // 2
    legs = {k: np.flatnonzero(np.isin(labels[:, row, k], (2, 4)))[-1] for k in (mid - 3, mid + 3)}
    far = max(legs.values()) + 4
    for k, wall in legs.items():  # wall: the outermost myocardium voxel on that slice
        out[wall + 1:far + 1, row, k] = 2
    out[far, row, mid - 3:mid + 4] = 2
    return out, int((out != labels).sum())


@pytest.mark.parametrize("det_sign", [1, -1])
def test_segment_like_handle_is_closed_before_meshing(det_sign):
    phantom = make_phantom((1.25, 1.25, 1.25), det_sign=det_sign, truth=False)
    labels, _ = _staple(phantom.labels)
    raw = surface_mesh(labels, phantom.affine, repair_topology=False)
    assert raw.quality["euler_characteristic"]["genus"] >= 1
    fixed = surface_mesh(labels, phantom.affine)
    plain = surface_mesh(phantom.labels, phantom.affine)
    assert fixed.quality["passed"], fixed.quality["failed"]
    assert plain.quality["passed"], plain.quality["failed"]
    # The phantom's own thin RV tips leave pillars across the pool; the staple is one more.
    assert _handles_closed(fixed) == _handles_closed(plain) + 1


def _handles_closed(surf) -> int:
    note = [n for n in surf.notes if "handle" in n]
    return int(note[0].split()[1]) if note else 0

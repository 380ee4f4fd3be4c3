"""From probabilities to labels: the 0.5 background rule, the clean-up, the geometric RV wall."""

from __future__ import annotations

import numpy as np

from bvmesh.labels import LV_MYO, LV_POOL, RV_MYO, RV_POOL
from bvmesh.postprocess import add_rv_wall, clean, largest_component, one_hot, threshold


def test_threshold_makes_heart_only_where_background_is_below_one_half():
    classes = ("lv_pool", "lv_myo", "rv_pool")
    probs = np.zeros((4, 1, 1, 3), np.float32)
    probs[:, 0, 0, 0] = (0.49, 0.1, 0.3, 0.11)  # heart (bg < 0.5): its best class, myocardium
    probs[:, 0, 0, 1] = (0.50, 0.4, 0.05, 0.05)  # exactly 0.5 is background
    probs[:, 0, 0, 2] = (0.0, 0.2, 0.2, 0.6)  # RV pool
    assert threshold(probs, classes)[0, 0].tolist() == [LV_MYO, 0, RV_POOL]


def test_threshold_maps_channels_to_bvmesh_values_for_any_class_order():
    probs = np.zeros((3, 1, 1, 2), np.float32)
    probs[:, 0, 0, 0] = (0.0, 1.0, 0.0)
    probs[:, 0, 0, 1] = (0.0, 0.0, 1.0)
    assert threshold(probs, ("rv_pool", "lv_pool"))[0, 0].tolist() == [RV_POOL, LV_POOL]


def test_clean_keeps_the_largest_piece_and_fills_pool_holes():
    labels = np.zeros((3, 20, 20), np.uint8)
    labels[:, 4:14, 4:14] = LV_MYO
    labels[:, 6:12, 6:12] = LV_POOL
    labels[1, 8, 8] = 0  # a hole in the pool
    labels[:, 17:19, 17:19] = LV_MYO  # an island of myocardium
    out = clean(labels)
    assert out[1, 8, 8] == LV_POOL
    assert not out[:, 17:19, 17:19].any()
    assert (out[:, 4:14, 4:14] == labels[:, 4:14, 4:14]).sum() == 3 * 100 - 1  # only the hole


def test_clean_fills_holes_slice_by_slice_not_through_the_stack():
    # A ring of RV pool on the middle slice only: its hole is open above and below, so a
    # 3D fill would leave it; each slice is filled on its own.
    labels = np.zeros((3, 12, 12), np.uint8)
    labels[1, 2:10, 2:10] = RV_POOL
    labels[1, 4:8, 4:8] = 0
    out = clean(labels)
    assert (out[1, 4:8, 4:8] == RV_POOL).all()
    assert not out[[0, 2]].any()
    # A gap through the ring joins the hole to the outside (in-plane): nothing to fill.
    leaky = labels.copy()
    leaky[1, 5, 2:4] = 0
    assert (clean(leaky)[1, 4:8, 4:8] == 0).all()
    # Only touching at a corner (4-connectivity): still a hole.
    cornered = labels.copy()
    cornered[1, 2:4, 2:4] = 0
    assert (clean(cornered)[1, 4:8, 4:8] == RV_POOL).all()


def test_largest_component_of_an_empty_or_single_mask_is_itself():
    empty = np.zeros((4, 4), bool)
    assert largest_component(empty) is empty
    one = np.zeros((4, 4), bool)
    one[1:3, 1:3] = True
    assert largest_component(one) is one


def test_rv_wall_is_a_shell_of_the_given_thickness_outside_the_lv():
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[10:20, 10:20, 10:20] = RV_POOL
    labels[10:20, 10:20, 21:24] = LV_MYO  # the septum side: never turned into RV wall
    out = add_rv_wall(labels, spacing_mm=1.0, thickness_mm=3.0)
    wall = out == RV_MYO
    assert (out[labels > 0] == labels[labels > 0]).all()  # only background changes
    assert wall[15, 15, 7:10].all() and not wall[15, 15, 6]  # 3 voxels = 3 mm on the free side
    assert wall[15, 15, 20]  # the background gap to the LV is closed by wall...
    assert (out[10:20, 10:20, 21:24] == LV_MYO).all()  # ...but the LV stays LV
    assert add_rv_wall(labels, 1.0, 0.0) is labels


def test_one_hot_has_one_channel_per_label_summing_to_one():
    labels = np.array([[0, 1, 2], [3, 4, 0]], np.uint8)
    oh = one_hot(labels)
    assert oh.shape == (5, 2, 3)
    np.testing.assert_array_equal(oh.sum(0), 1)
    np.testing.assert_array_equal(oh.argmax(0), labels)


def test_clean_keeps_the_piece_the_initialisation_slice_holds_over_a_larger_one():
    """A stomach read as LV cavity past the apex outweighs the real cavity; the cavity the
    propagation started from (on the initialisation slice) is the one kept."""
    labels = np.zeros((30, 20, 20), np.uint8)
    labels[2:10, 6:12, 6:12] = LV_POOL  # the heart's cavity, through slice 5
    labels[14:30, 2:18, 2:18] = LV_POOL  # a larger organ beyond it
    out = clean(labels, seed_slice=5)
    assert (out[2:10] == LV_POOL).all(axis=0)[6:12, 6:12].all()
    assert not out[14:].any()
    assert clean(labels)[14:].any() and not clean(labels)[2:10].any()  # the largest, unseeded
    assert not clean(labels, seed_slice=12)[2:10].any()  # no piece on it: the largest

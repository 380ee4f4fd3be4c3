"""The inference engine: which slices each network predicts, and how fusion mixes them."""

from __future__ import annotations

import numpy as np
import torch
from conftest import TINY_CONFIG

from bvmesh.model import build_model
from bvmesh.propagate import init_slices, segment_stack


class ConstantProp(torch.nn.Module):
    """A propagation network that always predicts the same class probabilities."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = torch.log(torch.tensor(probs))
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device
        self.calls = 0

    def forward(self, slices, mask):
        self.calls += 1
        n, _, h, w = slices.shape
        out = self.logits.view(1, 1, -1, 1, 1).expand(n, 4, -1, h, w)
        return [out]


def _model(prop_probs):
    torch.manual_seed(0)
    model = build_model(TINY_CONFIG).eval()
    model.prop = ConstantProp(prop_probs)
    return model


def test_pure_propagation_takes_the_propagation_output_everywhere_but_the_init_slice():
    model = _model([0.7, 0.1, 0.1, 0.1])
    image = np.random.default_rng(0).random((13, 128, 128), dtype=np.float32)
    probs = segment_stack(model, image, 6, fusion=False)
    init = init_slices(model, image, [6])[0]
    np.testing.assert_allclose(probs[:, 6], init, atol=1e-6)
    for z in (0, 2, 5, 7, 10, 12):
        np.testing.assert_allclose(probs[:, z].mean((1, 2)), [0.7, 0.1, 0.1, 0.1], atol=1e-5)
    # up and down fronts travel together: 6 slices above and below need 2 batched steps
    assert model.prop.calls == 2


def test_fusion_averages_each_propagated_mask_with_the_slice_own_prediction():
    model = _model([0.1, 0.2, 0.3, 0.4])
    image = np.random.default_rng(1).random((9, 128, 128), dtype=np.float32)
    per_slice = init_slices(model, image, list(range(9))).transpose(1, 0, 2, 3)
    probs = segment_stack(model, image, 4, fusion=True)
    np.testing.assert_allclose(probs[:, 4], per_slice[:, 4], atol=1e-6)
    expected = 0.5 * (np.array([0.1, 0.2, 0.3, 0.4])[:, None, None] + per_slice[:, 0])
    np.testing.assert_allclose(probs[:, 0], expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_no_propagation_is_the_initialisation_network_on_every_slice():
    model = _model([0.25, 0.25, 0.25, 0.25])
    image = np.random.default_rng(2).random((5, 128, 128), dtype=np.float32)
    probs = segment_stack(model, image, 2, propagation=False)
    np.testing.assert_allclose(probs, init_slices(model, image, list(range(5))).transpose(1, 0, 2, 3),
                               atol=1e-6)
    assert model.prop.calls == 0


def test_fusion_anchors_the_slices_passed_on_and_leaves_the_rest_propagated():
    from bvmesh.propagate import front_slices

    assert front_slices(13, 6) == [2, 6, 10]
    assert front_slices(9, 0) == [0, 4, 8]
    model = _model([0.1, 0.2, 0.3, 0.4])
    image = np.random.default_rng(3).random((13, 128, 128), dtype=np.float32)
    per_slice = init_slices(model, image, list(range(13))).transpose(1, 0, 2, 3)
    from bvmesh.propagate import segment_stacks

    probs = segment_stacks(model, image[None], 6, fusion=True, fronts_only=True)[0]
    constant = np.array([0.1, 0.2, 0.3, 0.4])[:, None, None]
    for z in (2, 10):  # passed on: averaged with the slice's own reading
        np.testing.assert_allclose(probs[:, z], 0.5 * (constant + per_slice[:, z]), atol=1e-5)
    for z in (0, 3, 5, 7, 9, 12):  # not passed on: the propagation network's output
        np.testing.assert_allclose(probs[:, z].mean((1, 2)), constant[:, 0, 0], atol=1e-5)
    # The default (what a meshed case gets) anchors every slice.
    every = segment_stack(model, image, 6, fusion=True)
    np.testing.assert_allclose(every[:, 3], 0.5 * (constant + per_slice[:, 3]), atol=1e-5)


def test_fusion_on_acquired_slices_interpolates_the_anchor_between_them():
    """With the acquired slices' stack positions, the initialisation network reads the
    stack slices nearest them and the anchor is linear between them, held beyond."""
    model = _model([0.1, 0.2, 0.3, 0.4])
    image = np.random.default_rng(5).random((14, 128, 128), dtype=np.float32)
    per_slice = init_slices(model, image, list(range(14))).transpose(1, 0, 2, 3)
    # Acquired slices at stack positions 1.2, 6.9 and 11 (rounded: 1, 7, 11).
    probs = segment_stack(model, image, 7, fusion=True, acquired=np.array([1.2, 6.9, 11.0]))
    constant = np.array([0.1, 0.2, 0.3, 0.4])[:, None, None]
    np.testing.assert_allclose(probs[:, 7], per_slice[:, 7], atol=1e-6)  # the init slice
    anchor = {0: per_slice[:, 1], 3: per_slice[:, 1] * 4 / 6 + per_slice[:, 7] * 2 / 6,
              9: (per_slice[:, 7] + per_slice[:, 11]) / 2, 13: per_slice[:, 11]}
    for z, a in anchor.items():
        np.testing.assert_allclose(probs[:, z], 0.5 * (constant + a), atol=1e-5)
    # Without positions (or with the constant off) every slice is read, as before.
    np.testing.assert_allclose(segment_stack(model, image, 7, fusion=True)[:, 3],
                               0.5 * (constant + per_slice[:, 3]), atol=1e-5)


def test_frames_batched_give_each_frame_its_own_result():
    from bvmesh.propagate import segment_stacks

    torch.manual_seed(0)
    model = build_model(TINY_CONFIG).eval()
    rng = np.random.default_rng(4)
    stacks = rng.random((3, 11, 128, 128), dtype=np.float32)
    batched = segment_stacks(model, stacks, 5, fusion=True)
    for f in range(3):
        np.testing.assert_allclose(batched[f], segment_stack(model, stacks[f], 5, fusion=True),
                                   atol=1e-5)

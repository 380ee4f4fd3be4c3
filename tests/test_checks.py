"""bvmesh.checks: a plausible heart passes, a wrong answer is flagged, exit code 4."""

from __future__ import annotations

import numpy as np

from bvmesh import checks, cohort
from bvmesh.pipeline import measurements
from bvmesh.testing import make_phantom


def _phantom_values(labels=None):
    ph = make_phantom((1.5, 1.5, 8.0), truth=False)
    labels = ph.labels if labels is None else labels
    spacing = np.linalg.norm(ph.affine[:3, :3], axis=0)
    base = int(np.flatnonzero(labels.any(axis=(0, 1)))[-1])  # base at the last slices
    return checks.measures(labels, spacing, 2, base, -1, measurements(labels, ph.affine), 0.0), ph


def _verdict(name, value):
    return checks.assess({name: value})["checks"][name]["verdict"]


def test_the_phantom_heart_passes_every_check():
    values, _ = _phantom_values()
    assert 6 < values["lv_wall_mm"] < 10  # 8 mm wall (28 - 20 mm radii)
    assert values["lv_ring_open"] == 0 and values["rv_beside_septum"] == 1
    qc = checks.assess(values)
    assert qc["verdict"] == "pass", qc


def test_a_wrong_answer_is_flagged():
    values, ph = _phantom_values()
    broken = ph.labels.copy()
    broken[broken == 2] = 0  # the LV pool without its wall: the ring is open, no mass
    bad, _ = _phantom_values(broken)
    qc = checks.assess(bad)
    assert qc["verdict"] == "fail" and {"lv_ring_open", "lv_mass_g"} <= set(qc["failed"])
    tiny = checks.assess({**values, "lv_pool_ml": 0.05, "lv_mass_g": 10.5})
    assert {"lv_pool_ml", "lv_mass_g"} <= set(tiny["failed"])
    assert checks.assess({**values, "removed_ml": 120})["failed"] == ["removed_ml"]


def test_strict_turns_warnings_into_failures_and_the_mesh_counts():
    values, _ = _phantom_values()
    warned = checks.assess({**values, "lv_pool_ml": 450})
    assert warned["verdict"] == "warn" and warned["warned"] == ["lv_pool_ml"]
    assert checks.assess({**values, "lv_pool_ml": 450}, strict=True)["verdict"] == "fail"
    assert checks.with_mesh(checks.assess(values), False)["failed"] == ["mesh_gate"]


def test_a_case_failing_qc_exits_4_and_the_summary_names_the_checks(tmp_path):
    values, _ = _phantom_values()
    good = {"qc": checks.assess(values), "measurements": {}}
    bad = {"qc": checks.assess({**values, "lv_pool_ml": 0.05}), "measurements": {}}
    mesh_only = {"qc": checks.with_mesh(checks.assess(values), False), "measurements": {}}
    ok = cohort.CaseOutcome("a", "a.nii.gz", "ok", report=good)
    failed_qc = cohort.CaseOutcome("b", "b.nii.gz", "ok", report=bad)
    mesh = cohort.CaseOutcome("c", "c.nii.gz", "mesh-failed", report=mesh_only)
    assert cohort.exit_code([ok]) == 0
    assert cohort.exit_code([ok, failed_qc, mesh]) == 4
    assert cohort.exit_code([ok, mesh]) == 3
    cohort.write_summary([ok, failed_qc], tmp_path / "summary.csv")
    text = (tmp_path / "summary.csv").read_text()
    assert "b,ok,fail,lv_pool_ml" in text and "a,ok,pass," in text


def test_a_heart_mirrored_against_its_header_is_flagged():
    """An in-plane axis flipped in the data but not in the affine puts the RV to the
    patient's left; the right grid with either handedness keeps it right."""
    for det_sign in (1, -1):
        ph = make_phantom((1.5, 1.5, 8.0), det_sign=det_sign, truth=False)
        assert checks.rv_right(ph.labels, ph.affine) > 0.3
        right_x = np.argmax(np.abs(ph.affine[0, :2]))  # the in-plane axis most along world x
        mirrored = np.flip(ph.labels, axis=right_x)
        value = checks.rv_right(mirrored, ph.affine)
        assert value < 0
        assert "rv_right" in checks.assess({"rv_right": value})["warned"]
    assert checks.rv_right(np.zeros((4, 4, 4), np.uint8), np.eye(4)) is None


def test_a_slice_of_noise_in_the_heart_is_flagged():
    """A slice that holds no image (noise, a blank frame) warns or fails, with labels on
    it or not; real texture, on either slice axis, passes."""
    from bvmesh.testing import phantom_image

    ph = make_phantom((1.5, 1.5, 8.0), truth=False)
    image = phantom_image(ph)
    good = checks.image_texture(image, ph.labels, 2)
    assert good > 0.3 and _verdict("image_texture", good) == "pass"
    axis_first = checks.image_texture(np.moveaxis(image, 2, 0), np.moveaxis(ph.labels, 2, 0), 0)
    assert axis_first == good
    k = int(np.median(np.flatnonzero(ph.labels.any(axis=(0, 1)))))
    noisy = image.copy()
    noisy[..., k] = np.random.default_rng(1).uniform(0, image.max(), noisy[..., k].shape)
    value = checks.image_texture(noisy, ph.labels, 2)
    assert value < 0.1 and _verdict("image_texture", value) == "fail"
    blank = image.copy()
    blank[..., k] = 0
    assert checks.image_texture(blank, ph.labels, 2) == 0.0
    # A noisy slice stops propagation (and the locator), so the labels often end just
    # before it: the slice beyond each end of the heart is read too, and where the
    # locator saw heart.
    cut = ph.labels.copy()
    cut[..., k:] = 0
    assert checks.image_texture(noisy, cut, 2) < 0.1
    cut[..., k - 1] = 0
    assert checks.image_texture(noisy, cut, 2) > 0.3
    assert checks.image_texture(noisy, cut, 2, located=np.array([k - 1])) < 0.1
    assert checks.image_texture(image, np.zeros_like(ph.labels), 2) is None


def test_slices_out_of_order_are_flagged():
    """A stack in its spatial order passes slice_order; the same slices shuffled warn
    or fail; too few slices say nothing."""
    from bvmesh.testing import phantom_image

    ph = make_phantom((1.5, 1.5, 8.0), truth=False)
    image = phantom_image(ph)
    value = checks.slice_order(image, ph.labels, 2)
    assert value < -0.5 and _verdict("slice_order", value) == "pass"
    assert checks.slice_order(np.moveaxis(image, 2, 1), np.moveaxis(ph.labels, 2, 1), 1) == value
    order = np.array([5, 1, 8, 3, 0, 9, 6, 2, 7, 4])
    assert sorted(order) == list(range(image.shape[2]))
    shuffled = checks.slice_order(image[..., order], ph.labels[..., order], 2)
    assert _verdict("slice_order", shuffled) != "pass"
    assert checks.slice_order(image[..., :3], ph.labels[..., :3], 2) is None
    assert checks.slice_order(image, np.zeros_like(ph.labels), 2) is None


def test_labels_that_stop_mid_heart_are_flagged():
    """Propagation lost at a corrupted slice leaves a large last section with the scan
    going on; a heart that tapers, or labels that run to the scan's end, pass."""
    values, ph = _phantom_values()
    assert values["apical_end"] is None or values["apical_end"] < 0.6
    on = np.flatnonzero(ph.labels.any(axis=(0, 1)))
    cut = ph.labels.copy()
    cut[..., : on[len(on) // 2]] = 0  # the base at the last slices: drop the apical half
    stopped, _ = _phantom_values(cut)
    assert stopped["apical_end"] > 0.6
    assert _verdict("apical_end", stopped["apical_end"]) == "warn"
    to_the_end = ph.labels[..., on[len(on) // 2]:]  # the scan itself ends there
    reached, _ = _phantom_values(to_the_end)
    assert reached["apical_end"] is None

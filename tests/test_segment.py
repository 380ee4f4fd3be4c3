"""segment() and the case folder end to end, with a tiny random model on oblique phantom images.

A random model segments nothing sensible, so these tests check what does not depend on
the weights: grids, headers, files, reports, and (with the phantom's exact labels put in
place of the network's) that the mesh lands on the myocardium in world mm.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from bvmesh import outputs, pipeline, preprocess
from bvmesh.errors import GeometryError, OutputError


@pytest.mark.parametrize("det_sign,base_at_start,spacing", [(1, False, (1.6, 1.6, 9.0)),
                                                            (-1, True, (1.5, 1.7, 8.0))])
def test_segment_then_write_case_keeps_the_input_grid_and_header(make_case, tiny_model, tiny_weights,
                                                                 tmp_path, det_sign, base_at_start,
                                                                 spacing):
    case = make_case("heart", spacing=spacing, det_sign=det_sign, base_at_start=base_at_start)
    result = pipeline.segment(case.path, model=tiny_model, roi=case.roi, base_slice=case.base_slice,
                              probabilities=True)
    assert result.labels.shape == case.image.shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(result.volume.affine, nib.load(str(case.path)).affine)
    assert result.probabilities.shape == (5, *case.image.shape)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-5)

    folder = outputs.write_case(result, tmp_path / "out", "heart", probabilities=True, mesh=None)
    assert folder == tmp_path / "out" / "heart"
    assert sorted(p.name for p in folder.iterdir()) == ["labels.nii.gz", "myocardium.nii.gz",
                                                        "probabilities.nii.gz", "qc.png", "report.json"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["heart"]  # no temporary left
    source = nib.load(str(case.path))
    for name in ("labels.nii.gz", "myocardium.nii.gz", "probabilities.nii.gz"):
        img = nib.load(str(folder / name))
        assert img.shape[:3] == case.image.shape, name
        np.testing.assert_array_equal(img.affine, source.affine, err_msg=name)
        for key in ("sform_code", "qform_code", "srow_x", "srow_y", "srow_z", "quatern_b",
                    "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
            np.testing.assert_array_equal(img.header[key], source.header[key], err_msg=f"{name} {key}")
    labels = np.asanyarray(nib.load(str(folder / "labels.nii.gz")).dataobj)
    np.testing.assert_array_equal(labels, result.labels)
    myo = np.asanyarray(nib.load(str(folder / "myocardium.nii.gz")).dataobj)
    np.testing.assert_array_equal(myo, np.isin(result.labels, (2, 4)))
    probs = nib.load(str(folder / "probabilities.nii.gz")).get_fdata()
    assert probs.shape == (*case.image.shape, 5)
    np.testing.assert_allclose(np.moveaxis(probs, -1, 0), result.probabilities, atol=1e-6)
    assert (folder / "qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((folder / "report.json").read_text())
    np.testing.assert_allclose(report["geometry"]["affine"], case.affine, atol=1e-5)
    np.testing.assert_allclose(report["geometry"]["spacing_mm"], spacing, atol=1e-5)
    assert report["geometry"]["notes"]
    slices = report["slices"]
    assert slices["slice_axis"] == 2 and slices["base_slice"] == case.base_slice
    assert slices["apex_direction"] == ("increasing index" if base_at_start else "decreasing index")
    assert slices["roi_center_voxels"] == [round(c, 2) for c in case.roi]
    # The initialisation slice lies between base and apex, as the paper.
    assert (slices["init_slice"] - case.base_slice) * (1 if base_at_start else -1) > 0
    assert set(report["timings_s"]) >= {"read", "load_model", "locate", "preprocess", "network",
                                        "postprocess"}
    assert report["device"] == "cpu"
    assert report["weights"]["sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    voxel_ml = abs(np.linalg.det(case.affine[:3, :3])) / 1000
    assert report["measurements"]["rv_myo_ml"] == pytest.approx((result.labels == 4).sum() * voxel_ml,
                                                                abs=0.01)
    assert report["outputs"] == ["labels.nii.gz", "myocardium.nii.gz", "probabilities.nii.gz",
                                 "qc.png", "report.json"]


def test_measurements_of_the_phantom(make_case):
    case = make_case(spacing=(1.5, 1.5, 8.0), det_sign=-1)
    labels = case.phantom.labels
    m = pipeline.measurements(labels, case.affine)
    voxel_ml = 1.5 * 1.5 * 8.0 / 1000
    for value, key in ((1, "lv_pool_ml"), (2, "lv_myo_ml"), (3, "rv_pool_ml"), (4, "rv_myo_ml")):
        assert m[key] == pytest.approx((labels == value).sum() * voxel_ml, abs=0.01)
    assert m["lv_mass_g"] == pytest.approx(m["lv_myo_ml"] * 1.05, abs=0.02)
    assert m["myocardium_ml"] == pytest.approx(m["lv_myo_ml"] + m["rv_myo_ml"], abs=0.02)
    # Half ellipsoidal shells (mm): LV wall 2/3 pi (28 28 53 - 20 20 45) = 49.4 ml, sampled.
    assert m["lv_myo_ml"] == pytest.approx(2 / 3 * np.pi * (28 * 28 * 53 - 20 * 20 * 45) / 1000, rel=0.1)


def test_mesh_of_the_case_lies_on_the_myocardium_in_world_mm(make_case, tiny_model, tmp_path):
    """Random weights give degenerate labels, so the phantom's exact labels stand in for them."""
    import trimesh

    case = make_case(spacing=(1.6, 1.6, 9.0), det_sign=-1)
    result = pipeline.segment(case.path, model=tiny_model, roi=case.roi, base_slice=case.base_slice)
    stack_labels = preprocess.resample(case.phantom.labels.astype(np.float32), result.grid, order=0,
                                       mode="constant").astype(np.uint8)
    exact = dataclasses.replace(result, labels=case.phantom.labels.copy(), stack_labels=stack_labels)
    folder = outputs.write_case(exact, tmp_path, "heart")
    assert {"mesh.vtp", "mesh.stl"} <= {p.name for p in folder.iterdir()}
    report = json.loads((folder / "report.json").read_text())
    assert report["mesh"]["quality"]["passed"], report["mesh"]
    assert set(report["mesh"]["quality"]["tag_area_mm2"]) == {"base", "rv", "lv", "epi"}
    stl = trimesh.load(folder / "mesh.stl")
    assert len(stl.faces) == report["mesh"]["faces"]
    points = stl.vertices
    # Every vertex, taken to input voxels through the input affine, is at the myocardium:
    # within one voxel in-plane and one slice through-plane of a myocardium voxel.
    from scipy import ndimage

    index = np.c_[points, np.ones(len(points))] @ np.linalg.inv(case.affine).T
    near = ndimage.binary_dilation(np.isin(case.phantom.labels, (2, 4)), np.ones((3, 3, 3), bool),
                                   iterations=2)
    ijk = np.clip(np.rint(index[:, :3]).astype(int), 0, np.array(near.shape) - 1)
    assert near[tuple(ijk.T)].mean() > 0.99
    # And the mesh spans the heart from apex to base (the phantom is 59 mm long).
    axis = case.phantom.base_normal
    heights = points @ axis
    assert heights.max() - heights.min() > 40


def test_a_case_without_myocardium_is_written_without_a_mesh_and_fails_qc(make_case, tiny_model,
                                                                          tmp_path):
    case = make_case()
    result = pipeline.segment(case.path, model=tiny_model, roi=case.roi, base_slice=case.base_slice)
    empty = dataclasses.replace(result, labels=np.zeros_like(result.labels),
                                stack_labels=np.zeros_like(result.stack_labels))
    folder = outputs.write_case(empty, tmp_path, "heart")
    assert not {"mesh.vtp", "mesh.stl", "mesh.png"} & {p.name for p in folder.iterdir()}
    report = json.loads((folder / "report.json").read_text())
    assert report["mesh"]["skipped"] == outputs.NO_MYOCARDIUM
    assert "mesh.vtp" not in report["outputs"]
    assert report["qc"]["checks"]["mesh_gate"]["verdict"] == "fail"
    assert report["qc"]["verdict"] == "fail"


def test_segment_refuses_bad_geometry(make_case, tiny_model):
    case = make_case()
    n = case.image.shape[2]
    for bad in (n, -1):
        with pytest.raises(GeometryError, match=rf"{case.path.name}.*--base-slice {bad}.*0\.\.{n - 1}"):
            pipeline.segment(case.path, model=tiny_model, roi=case.roi, base_slice=bad)
    with pytest.raises(GeometryError, match="--slice-axis must be 0, 1 or 2"):
        pipeline.segment(case.path, model=tiny_model, roi=case.roi, base_slice=3, slice_axis=5)


def test_write_case_is_all_or_nothing(make_case, tiny_model, tmp_path, monkeypatch):
    case = make_case()
    result = pipeline.segment(case.path, model=tiny_model, roi=case.roi, base_slice=case.base_slice)
    out = tmp_path / "out"
    first = outputs.write_case(result, out, "heart", mesh=None)
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    def broken(*args, **kwargs):
        raise OutputError("disk full")

    monkeypatch.setattr(outputs, "_write_qc", broken)
    with pytest.raises(OutputError):
        outputs.write_case(result, out, "heart", mesh=None)
    # The finished case is untouched and no temporary folder is left.
    assert [p.name for p in out.iterdir()] == ["heart"]
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    with pytest.raises(OutputError):
        outputs.write_case(result, out, "other", mesh=None)
    assert [p.name for p in out.iterdir()] == ["heart"]


def test_ablation_without_propagation(make_case, tiny_model):
    case = make_case()
    result = pipeline.segment(case.path, model=tiny_model, roi=case.roi, base_slice=case.base_slice,
                              propagation=False)
    assert result.labels.shape == case.image.shape and result.report["propagation"] is False


def test_options_object_and_keywords_agree(make_case, tiny_model):
    case = make_case("opts", spacing=(1.6, 1.6, 9.0))
    opts = pipeline.SegmentOptions(base_slice=case.base_slice, roi=case.roi, fusion=False)
    by_object = pipeline.segment(case.path, opts, model=tiny_model)
    by_keywords = pipeline.segment(case.path, model=tiny_model, base_slice=case.base_slice,
                                   roi=case.roi, fusion=False)
    np.testing.assert_array_equal(by_object.labels, by_keywords.labels)
    assert by_object.report["fusion"] is False
    # A keyword overrides the object; an unknown one is an error, not ignored.
    moved = pipeline.segment(case.path, opts, model=tiny_model, base_slice=case.base_slice - 1)
    assert moved.report["slices"]["base_slice"] == case.base_slice - 1
    with pytest.raises(TypeError, match="base_slices"):
        pipeline.segment(case.path, opts, model=tiny_model, base_slices=3)


@pytest.mark.parametrize("det_sign,apex_sign", [(1, 1), (-1, -1)])
def test_the_initialisation_slice_moves_basal_of_a_cavity_that_widens_again(det_sign, apex_sign):
    """The locator counted a stomach beyond the apex as heart, so the middle of its extent
    lay near the apex; the initialisation network's reading of the acquired slices shows the
    LV cavity narrowing and widening again, and the initialisation slice moves halfway to
    that waist. A tapering cavity leaves it where it was."""
    from bvmesh import geometry
    from bvmesh.testing import rotation

    affine = np.diag([1.4, 1.4 * det_sign, 10.0, 1.0])
    affine[:3, :3] = rotation((10.0, -20.0, 35.0)) @ affine[:3, :3]  # oblique
    n = 12
    base = 1 if apex_sign > 0 else n - 2
    grid = geometry.stack_grid(affine, (120, 120, n), slice_axis=2, base_slice=base,
                               apex_sign=apex_sign, center=(60.0, 60.0), size=32)
    read = np.unique(np.rint(grid.acquired(2, n)).astype(int))  # as read_acquired reads
    read = read[(read >= 0) & (read < grid.shape[0])]

    def reading(cavity_px):
        probs = np.zeros((1, 4, len(read), 32, 32), np.float32)
        probs[0, 0] = 1.0
        for k, px in enumerate(cavity_px[: len(read)]):
            probs[0, 1, k].ravel()[:px] = 2.0  # the LV pool wins on px pixels
        return read, probs

    geo = {"init_stack": int(read[5]), "report": {"init_slice": 6.0, "init_reason": "middle"}}
    classes = ("lv_pool", "lv_myo", "rv_pool")
    stomach = [900, 850, 700, 400, 200, 700, 900, 1000, 1000, 1000]
    moved = pipeline.init_before_waist(geo, reading(stomach), classes, grid, 2)
    assert moved["init_stack"] == int(read[4]) // 2
    assert "widens again" in moved["report"]["init_reason"]
    expected = base + apex_sign * moved["init_stack"] * grid.spacing_mm / 10.0
    assert moved["report"]["init_slice"] == pytest.approx(expected, abs=0.01)
    taper = [900, 880, 850, 800, 700, 560, 400, 250, 120, 40]
    assert pipeline.init_before_waist(geo, reading(taper), classes, grid, 2) is geo
    basal = {**geo, "init_stack": int(read[3])}  # on the heart, basal of the waist: kept
    assert pipeline.init_before_waist(basal, reading(stomach), classes, grid, 2) is basal

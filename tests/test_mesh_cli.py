"""`bvmesh mesh` end to end on phantom label files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from bvmesh.cli.main import app
from bvmesh.testing import hole_in_lv_wall, make_phantom

runner = CliRunner()


def _save(labels, affine, path):
    img = nib.Nifti1Image(labels.astype(np.uint8), affine)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def test_acdc_labels_to_tagged_vtp(tmp_path):
    phantom = make_phantom((1.5, 1.5, 8.0), det_sign=-1, truth=False, rv_wall_mm=0.0)
    acdc = np.select([phantom.labels == 3, phantom.labels == 2, phantom.labels == 1],
                     [1, 2, 3], 0)  # ACDC: 1 RV pool, 2 LV myo, 3 LV pool
    src = _save(acdc, phantom.affine, tmp_path / "case_gt.nii.gz")
    result = runner.invoke(app, ["mesh", str(src), "-o", str(tmp_path / "m.vtp"),
                                 "--labels", "acdc", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.quality.json").read_text())
    assert report["quality"]["passed"] and (tmp_path / "m.vtp").exists()
    assert any("geometric RV free wall" in n for n in report["notes"])
    assert report["quality"]["tag_area_mm2"]["rv"] > 0


def test_format_option(tmp_path):
    phantom = make_phantom((1.5, 1.5, 8.0), truth=False)
    src = _save(phantom.labels, phantom.affine, tmp_path / "case.nii.gz")
    ok = runner.invoke(app, ["mesh", str(src), "-o", str(tmp_path / "m.vtp"), "--format", "stl"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "m.stl").exists() and not (tmp_path / "m.vtp").exists()
    bad = runner.invoke(app, ["mesh", str(src), "-o", str(tmp_path / "b.vtp"),
                              "--labels", "1=lv_pool,2=lv_myo"])
    assert bad.exit_code == 1 and "not in the label map" in bad.output


def test_gate_failure_still_writes_and_exits_3(tmp_path, monkeypatch):
    import bvmesh.mesh as mesh

    real = mesh.surface_mesh
    # Without topology repair a hole through the LV wall stays a handle: a real failure.
    monkeypatch.setattr(mesh, "surface_mesh",
                        lambda *a, **k: real(*a, **{**k, "repair_topology": False}))
    phantom = make_phantom((1.5, 1.5, 8.0), truth=False)
    labels = hole_in_lv_wall(phantom.labels, slice_axis=2)
    src = _save(labels, phantom.affine, tmp_path / "case.nii.gz")
    res = runner.invoke(app, ["mesh", str(src), "-o", str(tmp_path / "m.vtp")])
    assert res.exit_code == 3, res.output
    assert (tmp_path / "m.vtp").exists()
    report = json.loads((tmp_path / "m.quality.json").read_text())
    assert not report["quality"]["passed"]
    assert "euler_characteristic" in report["quality"]["failed"]
    assert "quality gate" in res.output


def test_unknown_format_is_a_usage_error(tmp_path):
    phantom = make_phantom((1.5, 1.5, 8.0), truth=False)
    src = _save(phantom.labels, phantom.affine, tmp_path / "case.nii.gz")
    res = runner.invoke(app, ["mesh", str(src), "--format", "fbx"])
    assert res.exit_code == 2


def test_mesh_formats_are_one_list_and_reports_do_not_collide(tmp_path):
    from bvmesh.cli.mesh import FORMATS
    from bvmesh.mesh.export import FORMAT_SUFFIX
    from bvmesh.mesh.labelmap import quality_path

    assert set(FORMATS) == set(FORMAT_SUFFIX)
    assert quality_path(tmp_path / "a.v1.vtp") != quality_path(tmp_path / "a.v2.vtp")
    assert quality_path(tmp_path / "heart.vtp").name == "heart.quality.json"

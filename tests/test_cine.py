"""Cines: 4D NIfTI and multi-phase DICOM in, every frame segmented on one geometry, the 4D
labels on the input's 4D grid, volumes.csv/png, ED/ES, function figures, meshes at both."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from bvmesh import io
from bvmesh.cine import body_surface_area, ed_es, function_figures, fuse, jitter, segment_cine
from bvmesh.cli.main import app
from bvmesh.testing import beating_phantom

try:
    from conftest import heart_base_and_roi, phantom_image, save_nifti
    from test_io import oblique_affine, write_dicom_series
except ImportError:
    from tests.conftest import heart_base_and_roi, phantom_image, save_nifti
    from tests.test_io import oblique_affine, write_dicom_series

runner = CliRunner()
TIMES_MS = [12.0, 46.0, 80.0, 114.0, 148.0]


def world_equal(a: io.Cine, b: io.Cine) -> None:
    """Every voxel of ``a`` holds what ``b`` holds at the same world point, in every frame."""
    to_b = np.linalg.inv(b.affine) @ a.affine
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in a.data.shape[:3]], indexing="ij"), -1)
    mapped = np.rint(idx.reshape(-1, 3) @ to_b[:3, :3].T + to_b[:3, 3]).astype(int)
    np.testing.assert_allclose(idx.reshape(-1, 3) @ to_b[:3, :3].T + to_b[:3, 3], mapped, atol=1e-3)
    np.testing.assert_array_equal(a.data.reshape(-1, a.n_frames),
                                  b.data[mapped[:, 0], mapped[:, 1], mapped[:, 2]])


def beating_case(tmp_path, n_frames=5, es_frame=2, det_sign=1):
    """A beating phantom cine as 4D NIfTI with 34 ms frames (xyzt units mm, ms)."""
    frames = beating_phantom(n_frames, es_frame, spacing=(1.6, 1.6, 9.0), det_sign=det_sign)
    data = np.stack([phantom_image(p, seed=t) for t, p in enumerate(frames)], axis=3)
    img = nib.Nifti1Image(data, frames[0].affine)
    img.set_sform(frames[0].affine, code=1)
    img.set_qform(frames[0].affine, code=1)
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 34.0
    path = tmp_path / "cine.nii.gz"
    nib.save(img, str(path))
    base, roi = heart_base_and_roi(frames[0], False)
    return path, frames, base, roi


@pytest.mark.parametrize("det_sign", [1, -1])
def test_multiphase_dicom_is_split_by_trigger_time_like_the_4d_nifti(tmp_path, det_sign):
    affine = oblique_affine(det_sign=det_sign)
    rng = np.random.default_rng(0)
    data = rng.integers(1, 1000, (20, 24, 6, len(TIMES_MS))).astype(np.float32)
    save_nifti(data, affine, tmp_path / "cine.nii.gz")
    write_dicom_series(data, affine, tmp_path / "dicom", TIMES_MS)
    from_dicom = io.load_cine(tmp_path / "dicom")
    world_equal(io.load_cine(tmp_path / "cine.nii.gz"), from_dicom)
    assert from_dicom.times_ms == tuple(TIMES_MS)
    assert io.frame_count(tmp_path / "dicom") == len(TIMES_MS)
    assert any("5 phases of 6 slices" in n for n in from_dicom.notes)
    # One frame of it, as --frame reads it: that phase alone, not a tall stack.
    third = io.load(tmp_path / "dicom", frame=2)
    assert third.shape == (20, 24, 6)
    np.testing.assert_array_equal(third.data, from_dicom.data[..., 2])


def test_plain_dicom_and_3d_files_are_one_frame(tmp_path):
    affine = oblique_affine()
    data = np.random.default_rng(1).integers(1, 1000, (20, 24, 6)).astype(np.float32)
    write_dicom_series(data, affine, tmp_path / "dicom")
    save_nifti(data, affine, tmp_path / "a.nii.gz")
    assert io.frame_count(tmp_path / "dicom") == io.frame_count(tmp_path / "a.nii.gz") == 1
    with pytest.raises(io.InputError, match=r"a\.nii\.gz.*not a cine"):
        io.load_cine(tmp_path / "a.nii.gz")


def test_nifti_frame_times_come_from_pixdim_only_with_a_time_unit(tmp_path):
    data = np.random.default_rng(2).integers(1, 1000, (20, 24, 6, 3)).astype(np.float32)
    img = nib.Nifti1Image(data, oblique_affine())
    img.header["pixdim"][4] = 0.034
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(tmp_path / "sec.nii.gz"))
    assert io.load_cine(tmp_path / "sec.nii.gz").times_ms == (0.0, 34.0, 68.0)
    img.header.set_xyzt_units("mm", "unknown")  # ACDC's cines: pixdim 1.0, no unit
    nib.save(img, str(tmp_path / "none.nii.gz"))
    assert io.load_cine(tmp_path / "none.nii.gz").times_ms is None


def test_ed_es_from_the_lv_curve_unless_given():
    curve = [120.0, 110.0, 70.0, 55.0, 90.0, 118.0, 125.0]
    assert ed_es(curve)[:2] == (6, 3)
    ed, es, why = ed_es(curve, ed=0, es=None)
    assert (ed, es) == (0, 3)
    assert why["ed"] == "given by --ed" and why["es"] == "smallest LV blood pool"


def test_function_figures_and_their_body_surface_area_index():
    ed = {"lv_pool_ml": 150.0, "rv_pool_ml": 160.0, "lv_mass_g": 120.0}
    es = {"lv_pool_ml": 60.0, "rv_pool_ml": 80.0, "lv_mass_g": 118.0}
    f = function_figures(ed, es)
    assert (f["lv_sv_ml"], f["lv_ef_pct"], f["rv_ef_pct"]) == (90.0, 60.0, 50.0)
    assert f["lv_mass_ed_g"] == 120.0 and "bsa_m2" not in f
    assert body_surface_area(180, 80) == pytest.approx(2.0)
    indexed = function_figures(ed, es, height_cm=180, weight_kg=80)
    assert indexed["lv_edv_ml_per_m2"] == 75.0 and indexed["lv_mass_ed_g_per_m2"] == 60.0


def test_temporal_fusion_is_periodic_and_keeps_a_constant_frame():
    rng = np.random.default_rng(3)
    probs = rng.random((6, 3, 4, 5, 5)).astype(np.float16)
    np.testing.assert_allclose(fuse(probs, 0), 0.25 * probs[5] + 0.5 * probs[0] + 0.25 * probs[1],
                               atol=1e-3)
    constant = np.repeat(probs[:1], 6, axis=0)
    np.testing.assert_allclose(fuse(constant, 3), constant[3].astype(np.float32), atol=1e-6)
    assert jitter([10.0, 12.0, 14.0, 12.0]) == pytest.approx(1.0)
    assert jitter(list(100 + 20 * np.cos(np.linspace(0, 2 * np.pi, 40, endpoint=False)))) < 0.3


def cli(args, weights, roi):
    return runner.invoke(app, ["segment", *map(str, args), "--weights", str(weights),
                               "--device", "cpu", "--roi", f"{roi[0]:.2f},{roi[1]:.2f}"])


def test_cine_case_folder_on_the_4d_grid(tmp_path, tiny_weights):
    path, frames, base, roi = beating_case(tmp_path, det_sign=-1)
    out = tmp_path / "out"
    result = cli([path, "-o", out, "--base-slice", base, "--height-cm", 170, "--weight-kg", 70,
                  "--es", 2], tiny_weights, roi)
    assert result.exit_code in (0, 3, 4), result.stderr  # random weights: QC may fail
    folder = out / "cine"
    names = sorted(p.name for p in folder.iterdir())
    for name in ("labels.nii.gz", "myocardium.nii.gz", "volumes.csv", "volumes.png", "qc.png",
                 "qc_ES.png", "report.json"):
        assert name in names
    report = json.loads((folder / "report.json").read_text())
    written = np.asarray(nib.load(str(folder / "labels.nii.gz")).dataobj)
    for phase in ("ED", "ES"):
        # Random weights: a frame's mesh is written exactly when its labels hold myocardium.
        has_myo = bool(np.isin(written[..., report["mesh"][phase]["frame"]], (2, 4)).any())
        assert (f"mesh_{phase}.vtp" in names) == (f"mesh_{phase}.png" in names) == has_myo
        assert ("skipped" in report["mesh"][phase]) != has_myo
    source, labels = nib.load(str(path)), nib.load(str(folder / "labels.nii.gz"))
    assert labels.shape == source.shape
    np.testing.assert_array_equal(labels.affine, source.affine)
    assert labels.header["pixdim"][4] == 34.0
    assert labels.header.get_xyzt_units() == ("mm", "msec")
    rows = list(csv.DictReader((folder / "volumes.csv").open()))
    assert [float(r["time_ms"]) for r in rows] == [0.0, 34.0, 68.0, 102.0, 136.0]
    assert report["cine"]["es"] == {"frame": 2, "time_ms": 68.0, "reason": "given by --es"}
    assert report["cine"]["temporal_fusion"]["used"]
    assert report["function"]["bsa_m2"] == pytest.approx(body_surface_area(170, 70), abs=1e-3)
    assert report["slices"]["base_slice"] == base
    assert set(report["mesh"]) >= {"ED", "ES", "quality"}
    summary = next(csv.DictReader((out / "summary.csv").open()))
    assert summary["es_frame"] == "2" and summary["ed_frame"] == str(report["cine"]["ed"]["frame"])
    # Labels per frame: what the 4D file holds is each frame's own segmentation.
    assert [round(float((written[..., t] == 1).sum()), 0) for t in range(5)] == \
        [round(r["lv_pool_ml"] / (np.prod(source.header.get_zooms()[:3]) / 1000), 0)
         for r in report["frames"]]

    # The same folder re-run as one frame: the cine's own files go, the user's stay.
    (folder / "notes.txt").write_text("mine")
    again = cli([path, "-o", out, "--base-slice", base, "--frame", 1, "--no-mesh"], tiny_weights, roi)
    assert again.exit_code in (0, 4), again.stderr
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["labels.nii.gz", "myocardium.nii.gz", "notes.txt", "qc.png", "report.json"]
    assert nib.load(str(folder / "labels.nii.gz")).shape == source.shape[:3]


def test_multiphase_dicom_folder_is_segmented_as_a_cine(tmp_path, tiny_weights):
    _, frames, base, roi = beating_case(tmp_path, n_frames=3, es_frame=1)
    data = np.stack([phantom_image(p, seed=t) for t, p in enumerate(frames)], axis=3)
    write_dicom_series(np.rint(data), frames[0].affine, tmp_path / "series", TIMES_MS[:3])
    out = tmp_path / "out"
    result = cli([tmp_path / "series", "-o", out, "--base-slice", base, "--no-mesh"],
                 tiny_weights, roi)
    assert result.exit_code in (0, 4), result.stderr
    report = json.loads((out / "series" / "report.json").read_text())
    assert report["cine"]["n_frames"] == 3 and report["cine"]["times_ms"] == TIMES_MS[:3]
    assert not report["cine"]["temporal_fusion"]["used"]  # 3 frames are not a sampled cycle
    assert nib.load(str(out / "series" / "labels.nii.gz")).shape == (*frames[0].labels.shape, 3)


def test_bad_ed_frame_is_one_line_and_nothing_written(tmp_path, tiny_weights):
    path, _, base, roi = beating_case(tmp_path, n_frames=3, es_frame=1)
    out = tmp_path / "out"
    result = cli([path, "-o", out, "--base-slice", base, "--ed", 7], tiny_weights, roi)
    assert result.exit_code == 1
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "cine.nii.gz" in lines[0] and "ED frame given, 7" in lines[0]
    assert not out.exists()
    half = runner.invoke(app, ["segment", str(path), "--height-cm", "170"])
    assert half.exit_code == 2


def test_bundled_model_finds_ed_and_es_of_a_beating_phantom(tmp_path):
    frames = beating_phantom(6, 3, spacing=(1.6, 1.6, 9.0))
    data = np.stack([phantom_image(p, seed=t) for t, p in enumerate(frames)], axis=3)
    result = segment_cine(io.Cine(data, frames[0].affine, "phantom"), device="cpu")
    assert (result.ed, result.es) == (0, 3)
    truth = [int((p.labels == 1).sum()) for p in frames]
    found = [int((f.labels == 1).sum()) for f in result.frames]
    # The LV pool curve falls and rises with the truth's.
    assert np.corrcoef(truth, found)[0, 1] > 0.95


def test_ed_and_es_frames_are_segmented_as_a_single_frame_would_be(tmp_path, tiny_model):
    """A cine's frame goes the single-volume way on the cine's geometry. Frames that all
    hold one image share its geometry (a beating heart's median areas move the apex
    estimate, and so the initialisation slice, from any one frame's own)."""
    from bvmesh.pipeline import segment

    _, frames, base, roi = beating_case(tmp_path, n_frames=3, es_frame=1)
    image = phantom_image(frames[0], seed=0)
    path = tmp_path / "static.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([image] * 3, axis=3), frames[0].affine), str(path))
    cine = io.load_cine(path)
    result = segment_cine(cine, model=tiny_model, ed=0, es=1, base_slice=base, roi=roi)
    alone = segment(cine.frame(0), model=tiny_model, base_slice=base, roi=roi)
    assert result.frames[0].report["slices"]["init_slice"] == alone.report["slices"]["init_slice"]
    for t in (0, 1):  # meshed: every slice anchored, exactly as `bvmesh segment --frame t`
        np.testing.assert_array_equal(result.frames[t].labels, alone.labels)
        np.testing.assert_array_equal(result.frames[t].stack_labels, alone.stack_labels)


def test_a_frame_whose_own_base_is_lower_gets_a_stack_starting_there():
    from bvmesh import geometry
    from bvmesh.cine import FRAME_BASE_SHIFT, frame_geo, restack

    for sign, base in ((1, 2), (-1, 7)):
        geo = {"base_slice": base, "apex_sign": sign, "init_stack": 20,
               "frame_bases": [base, base + sign, base + sign * (FRAME_BASE_SHIFT + 1), base - sign],
               "report": {"base_slice": base, "slice_axis": 2}}
        assert frame_geo(geo, 0, 6.4) is geo  # the cine's own base
        own = frame_geo(geo, 1, 6.4)
        assert own["base_slice"] == own["report"]["base_slice"] == base + sign
        assert own["init_stack"] == 20 - 6  # the same initialisation slice, one slice less above
        assert geo["report"]["base_slice"] == base  # the cine's geometry is not changed
        assert frame_geo(geo, 2, 6.4) is geo and frame_geo(geo, 3, 6.4) is geo  # too far, basal
        grid, moved = (geometry.stack_grid(np.diag([1.5, 1.5, 8.0, 1.0]), (64, 64, 10),
                                           slice_axis=2, base_slice=b, apex_sign=sign,
                                           center=(32.0, 32.0), size=16)
                       for b in (base, base + sign))
        # Probabilities that encode each layer's input slice: moved, they must still do so.
        k = grid.to_input[2, 0] * np.arange(grid.shape[0]) + grid.to_input[2, 3]
        probs = np.broadcast_to(k[None, :, None, None], (2, grid.shape[0], 16, 16)).astype(np.float32)
        out = restack(probs, grid, moved, 2)
        k_moved = moved.to_input[2, 0] * np.arange(moved.shape[0]) + moved.to_input[2, 3]
        assert out.shape == (2, moved.shape[0], 16, 16) and k_moved[0] == base + sign
        inside = (k_moved - k[-1]) * sign <= 1e-6  # within the old stack (its end is clamped)
        assert inside.sum() >= len(k_moved) - 1
        np.testing.assert_allclose(out[0, inside, 0, 0], k_moved[inside], atol=1e-5)

"""Reading every supported format to the same world geometry, and the header traps of real data."""

from __future__ import annotations

import gzip
import locale

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bvmesh import io
from bvmesh.errors import InputError, OutputError

try:
    from conftest import save_nifti, sitk_image, write_itk

    from bvmesh.testing import rotation
except ImportError:
    from bvmesh.testing import rotation
    from tests.conftest import save_nifti, sitk_image, write_itk


def oblique_affine(spacing=(1.5, 1.7, 8.0), det_sign: int = 1, angles=(20.0, -15.0, 30.0),
                   origin=(-12.0, 35.0, 80.0)) -> np.ndarray:
    """Voxel -> RAS affine with rotated axes, anisotropic voxels and the given determinant sign."""
    direction = rotation(angles) @ np.diag([1.0, float(det_sign), 1.0])
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing, float)
    affine[:3, 3] = origin
    return affine


def integer_volume(shape=(20, 24, 6), seed: int = 0) -> np.ndarray:
    """Integer-valued float32 voxels (DICOM stores integers), all non-zero, no symmetry."""
    return np.random.default_rng(seed).integers(1, 1000, shape).astype(np.float32)


def write_dicom_series(data: np.ndarray, affine: np.ndarray, folder, times_ms=None) -> None:
    """One DICOM file per slice with ImagePositionPatient / ImageOrientationPatient (LPS);
    4D ``data`` (i, j, k, t) becomes one multi-phase series, each file with its phase's
    trigger time (``times_ms``), as cine scanners write them.

    ITK's DICOM writer switches the process locale to "C" (ASCII); it is restored so
    that later tests run with the locale they started with.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        folder.mkdir()
        frames = data[..., None] if data.ndim == 3 else data
        times = times_ms if times_ms is not None else [0.0] * frames.shape[3]
        for t in range(frames.shape[3]):
            _write_dicom_slices(frames[..., t], affine, folder, t, frames.shape[3], times[t])
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_slices(data: np.ndarray, affine: np.ndarray, folder, phase: int, phases: int,
                        time_ms: float) -> None:
    volume = sitk.Cast(sitk_image(data, affine), sitk.sitkInt16)
    d = volume.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    depth = volume.GetDepth()
    for k in range(depth):
        plane = volume[:, :, k]
        # Instances numbered phase by phase within a slice position, as GE numbers a cine.
        instance = k * phases + phase + 1
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.3.{instance}",
            "0020|0013": str(instance),
            "0018|1060": f"{time_ms:g}",
            "0020|0032": "\\".join(f"{v:.6f}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{v:.8f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0028|0030": "\\".join(f"{v:.6f}" for v in volume.GetSpacing()[:2]),
            "0018|0050": f"{volume.GetSpacing()[2]:.6f}",
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        # Written in shuffled order: the reader must sort by position and time, not by name.
        writer.SetFileName(str(folder / f"im{(instance * 7) % (depth * phases):04d}.dcm"))
        writer.Execute(plane)


@pytest.mark.parametrize("det_sign", [1, -1])
@pytest.mark.parametrize("fmt", [".nii", ".nii.gz", ".mha", ".nrrd", "dicom"])
def test_every_format_gives_the_same_world_geometry(tmp_path, fmt, det_sign):
    affine = oblique_affine(det_sign=det_sign)
    data = integer_volume()
    path = tmp_path / ("series" if fmt == "dicom" else f"image{fmt}")
    if fmt == "dicom":
        write_dicom_series(data, affine, path)
    elif fmt.startswith(".nii"):
        save_nifti(data, affine, path)
    else:
        write_itk(data, affine, path)
    volume = io.load(path)
    if fmt == "dicom" and det_sign < 0:
        # A DICOM series has no stored slice order: readers sort slices along
        # row x column, so a left-handed grid comes back with k reversed. The same
        # voxels sit at the same world positions, which is what matters.
        flip_k = np.eye(4)
        flip_k[2, 2], flip_k[2, 3] = -1.0, data.shape[2] - 1
        affine, data, det_sign = affine @ flip_k, data[:, :, ::-1], 1
    assert volume.shape == data.shape
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(volume.data, data)
    assert np.sign(np.linalg.det(volume.affine[:3, :3])) == det_sign
    np.testing.assert_allclose(volume.spacing, [1.5, 1.7, 8.0], rtol=1e-5)


def test_lps_to_ras_matches_simpleitk_and_nibabel(tmp_path):
    """A voxel's world position: ITK's physical point (LPS) with x, y negated == bvmesh (RAS)."""
    affine = oblique_affine(det_sign=-1)
    data = integer_volume()
    image = sitk_image(data, affine)
    sitk.WriteImage(image, str(tmp_path / "a.mha"))
    # ITK writes this NIfTI itself (its own LPS -> RAS), and nibabel reads it back independently.
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    from_mha = io.load(tmp_path / "a.mha")
    nib_affine = nib.load(str(tmp_path / "a.nii.gz")).affine
    for index in [(0, 0, 0), (3, 5, 2), (19, 23, 5), (7, 1, 4)]:
        x, y, z = image.TransformIndexToPhysicalPoint(index)
        world = from_mha.affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(world[:3], [-x, -y, z], atol=1e-6)
        np.testing.assert_allclose(world, nib_affine @ np.array([*index, 1.0]), atol=1e-4)
    # The voxel at (i, j, k) in bvmesh is the one ITK indexes the same way.
    assert from_mha.data[3, 5, 2] == image[3, 5, 2]


def test_4d_default_frame_zero_with_note_and_frame_choice(tmp_path):
    affine = oblique_affine()
    frames = np.stack([integer_volume(seed=s) for s in range(3)], axis=-1)
    save_nifti(frames, affine, tmp_path / "cine.nii.gz")
    default = io.load(tmp_path / "cine.nii.gz")
    np.testing.assert_array_equal(default.data, frames[..., 0])
    assert default.frame == 0
    assert any("3 frames" in n and "frame 0" in n and "--frame" in n for n in default.notes)
    second = io.load(tmp_path / "cine.nii.gz", frame=2)
    np.testing.assert_array_equal(second.data, frames[..., 2])
    assert second.frame == 2
    np.testing.assert_allclose(second.affine, affine, atol=1e-5)
    for bad in (3, -1):
        with pytest.raises(InputError, match=r"cine\.nii\.gz.*3 frames.*0\.\.2"):
            io.load(tmp_path / "cine.nii.gz", frame=bad)


def test_4d_metaimage_frame(tmp_path):
    frames = np.stack([integer_volume(seed=s) for s in range(2)], axis=-1)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(frames, (3, 2, 1, 0))),
                                   isVector=False)
    image.SetSpacing((1.5, 1.7, 8.0, 30.0))
    sitk.WriteImage(image, str(tmp_path / "cine.mha"))
    volume = io.load(tmp_path / "cine.mha", frame=1)
    np.testing.assert_array_equal(volume.data, frames[..., 1])
    np.testing.assert_allclose(volume.spacing, [1.5, 1.7, 8.0])
    # LPS identity direction is RAS diag(-1, -1, 1).
    np.testing.assert_allclose(volume.affine[:3, :3], np.diag([-1.5, -1.7, 8.0]))


def test_frame_on_a_3d_file_is_an_error(tmp_path):
    save_nifti(integer_volume(), oblique_affine(), tmp_path / "a.nii.gz")
    assert io.load(tmp_path / "a.nii.gz", frame=0).frame is None
    with pytest.raises(InputError, match=r"a\.nii\.gz.*3D.*--frame 1"):
        io.load(tmp_path / "a.nii.gz", frame=1)


def acdc_like_header(shape) -> nib.Nifti1Header:
    """ACDC's header: sform_code 2 with unit scales diag(-1, -1, 1), qform_code 0, real pixdim."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    sform = np.diag([-1.0, -1.0, 1.0, 1.0])
    sform[:3, 3] = [10.0, 20.0, -30.0]
    header.set_sform(sform, code=2)
    header["qform_code"] = 0
    header.set_zooms((1.5625, 1.5625, 10.0))
    return header


def test_acdc_trap_spacing_from_pixdim_and_header_written_unchanged(tmp_path):
    data = integer_volume((30, 32, 8))
    header = acdc_like_header(data.shape)
    nib.save(nib.Nifti1Image(data, None, header=header), str(tmp_path / "patient001.nii.gz"))
    volume = io.load(tmp_path / "patient001.nii.gz")
    np.testing.assert_allclose(volume.spacing, [1.5625, 1.5625, 10.0])
    # Directions and origin stay the sform's.
    np.testing.assert_allclose(volume.affine, [[-1.5625, 0, 0, 10], [0, -1.5625, 0, 20],
                                               [0, 0, 10, -30], [0, 0, 0, 1]])
    assert any("disagree with pixdim" in n and "sform (code 2)" in n for n in volume.notes)

    io.save_like(np.ones(volume.shape, np.uint8), volume, tmp_path / "labels.nii.gz")
    before = nib.load(str(tmp_path / "patient001.nii.gz")).header
    after = nib.load(str(tmp_path / "labels.nii.gz")).header
    for key in ("sform_code", "qform_code", "pixdim", "srow_x", "srow_y", "srow_z", "quatern_b",
                "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z", "dim", "xyzt_units"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert after.get_data_dtype() == np.uint8
    # And a reader of the output sees the same geometry as of the input.
    np.testing.assert_allclose(io.load(tmp_path / "labels.nii.gz").affine, volume.affine)


def sheared(direction: np.ndarray, amount: float = 1e-4) -> np.ndarray:
    """Directions made non-orthonormal by ``amount`` (M&Ms: float32 rounding in conversion)."""
    out = direction.copy()
    out[:, 2] += amount * direction[:, 0]
    out[:, 1] -= amount * direction[:, 2]
    return out


def test_mnms_trap_non_orthonormal_nifti(tmp_path):
    spacing = np.array([1.25, 1.25, 10.0])
    affine = np.eye(4)
    affine[:3, :3] = sheared(rotation((20.0, -15.0, 30.0))) * spacing
    affine[:3, 3] = [5.0, -6.0, 7.0]
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    assert np.abs(direction.T @ direction - np.eye(3)).max() > 5e-5  # really not orthonormal
    save_nifti(integer_volume(), affine, tmp_path / "mnms.nii.gz")
    volume = io.load(tmp_path / "mnms.nii.gz")
    np.testing.assert_allclose(volume.spacing, spacing, rtol=1e-5)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4)


def test_mnms_trap_non_orthonormal_metaimage(tmp_path):
    spacing = np.array([1.25, 1.25, 10.0])
    image = sitk.GetImageFromArray(np.transpose(integer_volume(), (2, 1, 0)).copy())
    direction = sheared(np.diag([-1.0, -1.0, 1.0]) @ rotation((20.0, -15.0, 30.0)))
    try:
        image.SetDirection(direction.ravel().tolist())
    except RuntimeError:
        pytest.skip("this SimpleITK refuses non-orthonormal directions")
    image.SetSpacing(spacing.tolist())
    sitk.WriteImage(image, str(tmp_path / "mnms.mha"))
    volume = io.load(tmp_path / "mnms.mha")
    np.testing.assert_allclose(volume.spacing, spacing, rtol=1e-5)
    np.testing.assert_allclose(volume.affine[:3, :3], np.diag([-1.0, -1.0, 1.0]) @ direction * spacing,
                               atol=1e-6)


def test_save_like_from_a_non_nifti_reference_writes_its_affine(tmp_path):
    affine = oblique_affine(det_sign=-1)
    write_itk(integer_volume(), affine, tmp_path / "a.nrrd")
    volume = io.load(tmp_path / "a.nrrd")
    io.save_like(np.full(volume.shape, 2, np.uint8), volume, tmp_path / "labels.nii.gz")
    img = nib.load(str(tmp_path / "labels.nii.gz"))
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    with pytest.raises(ValueError, match="does not match"):
        io.save_like(np.zeros((2, 2, 2)), volume, tmp_path / "bad.nii.gz")


@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage", "2d", "nan", "inf", "zeros",
                                  "one_slice", "unknown_suffix"])
def test_bad_inputs_raise_input_error_naming_the_file(tmp_path, kind):
    affine = oblique_affine()
    path = tmp_path / f"bad_{kind}.nii.gz"
    data = integer_volume()
    if kind == "truncated":
        save_nifti(data, affine, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "garbage":
        path.write_bytes(gzip.compress(b"not an image at all" * 50))
    elif kind == "2d":
        save_nifti(data[:, :, 0].copy(), np.eye(4), path)
    elif kind in ("nan", "inf"):
        data[3, 4, 2] = np.nan if kind == "nan" else np.inf
        save_nifti(data, affine, path)
    elif kind == "zeros":
        save_nifti(np.zeros_like(data), affine, path)
    elif kind == "one_slice":
        save_nifti(data[:, :, :1].copy(), affine, path)
    elif kind == "unknown_suffix":
        path = tmp_path / "image.png"
        path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError) as info:
        io.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "labels.nii.gz"

    def fails(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="labels.nii.gz.*No space left"):
        io.atomic_write(target, fails)
    assert list(tmp_path.iterdir()) == []

    def crashes(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(target, crashes)
    assert list(tmp_path.iterdir()) == []

    seen = []
    io.atomic_write(target, lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"ok")))
    assert target.read_bytes() == b"ok" and seen[0].endswith(".nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["labels.nii.gz"]


def test_case_name():
    assert io.case_name("/data/patient001_frame01.nii.gz") == "patient001_frame01"
    assert io.case_name("a/b/scan.MHA") == "scan"
    assert io.case_name("dicom/series42") == "series42"

"""Shared fixtures of the segmentation-engine tests: a tiny random model and phantom images.

Images are the analytic phantom of ``bvmesh.testing`` with one grey value per label plus
Gaussian noise, so every test knows the exact labels, affine, base slice and heart centre.
A random model finds no heart, so end-to-end tests pass ``roi`` and ``base_slice``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bvmesh.testing import LABEL_INTENSITY, Phantom, make_phantom, phantom_image

__all__ = ["LABEL_INTENSITY", "phantom_image"]  # the tests import them from here too
#: Small enough that a whole case runs in about a second on one core.
TINY_CONFIG = {"init_widths": [4, 4, 4], "prop_widths": [4, 4], "locator_width": 4}


@dataclass(frozen=True)
class PhantomCase:
    """A phantom image on disk, with what a user would pass to segment it."""

    path: Path
    image: np.ndarray  # float32 (i, j, k), the file's voxels
    phantom: Phantom  # exact labels and affine
    base_slice: int  # 0-based index of the last slice with heart, along the slice axis
    roi: tuple[float, float]  # heart centre in voxels along the two in-plane axes

    @property
    def affine(self) -> np.ndarray:
        return self.phantom.affine


def heart_base_and_roi(phantom: Phantom, base_at_start: bool) -> tuple[int, tuple[float, float]]:
    """The base slice (the labelled slice nearest the base plane) and the in-plane heart centre."""
    axis = phantom.slice_axis
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(phantom.labels.any(axis=other))
    base = int(present[0] if base_at_start else present[-1])
    centre = np.argwhere(phantom.labels.any(axis=axis)).mean(0)
    return base, (float(centre[0]), float(centre[1]))


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """A NIfTI with both sform and qform set (code 1, scanner), as scanners write them."""
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A randomly initialised tiny model saved as a real bvmesh checkpoint (seeded)."""
    import torch

    from bvmesh.model import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    return save_checkpoint(build_model(TINY_CONFIG), path, record={"note": "random, for tests"})


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    """The tiny checkpoint loaded through the same path the CLI takes (weights info attached)."""
    from bvmesh.pipeline import load_weights

    model, _ = load_weights(str(tiny_weights), "cpu")
    return model


@pytest.fixture
def make_case(tmp_path):
    """Factory: ``make_case(name, spacing=..., det_sign=..., suffix=...)`` -> PhantomCase on disk.

    Defaults: an oblique (20, -15, 30 degree) grid of 1.6 x 1.6 x 9 mm voxels, base at the
    last slices, written as NIfTI with sform and qform code 1.
    """

    def make(name: str = "case", *, spacing=(1.6, 1.6, 9.0), det_sign: int = 1,
             slice_axis: int = 2, base_at_start: bool = False, oblique=(20.0, -15.0, 30.0),
             suffix: str = ".nii.gz", seed: int = 0, folder: Path | None = None) -> PhantomCase:
        phantom = make_phantom(spacing, slice_axis=slice_axis, oblique=oblique, det_sign=det_sign,
                               base_at_start=base_at_start, truth=False)
        image = phantom_image(phantom, seed)
        folder = tmp_path if folder is None else folder
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}{suffix}"
        if suffix in (".nii", ".nii.gz"):
            save_nifti(image, phantom.affine, path)
        else:
            write_itk(image, phantom.affine, path)
        base, roi = heart_base_and_roi(phantom, base_at_start)
        return PhantomCase(path, image, phantom, base, roi)

    return make


def sitk_image(data: np.ndarray, affine: np.ndarray):
    """A SimpleITK image of ``data`` (i, j, k) whose LPS geometry is the RAS ``affine``'s.

    Built by hand (not through bvmesh) so that tests check bvmesh's LPS <-> RAS conversion
    against an independent one: ITK's direction/origin are the RAS ones with x and y negated.
    """
    import SimpleITK as sitk

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    flip = np.diag([-1.0, -1.0, 1.0])
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (flip @ (affine[:3, :3] / spacing)).ravel()])
    image.SetOrigin([float(v) for v in flip @ affine[:3, 3]])
    return image


def write_itk(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write ``data`` with the RAS ``affine`` as .mha / .nrrd through SimpleITK."""
    import SimpleITK as sitk

    sitk.WriteImage(sitk_image(data, affine), str(path))
    return path

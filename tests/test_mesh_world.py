"""A mesh lands on the same world points however the label file was read."""

from __future__ import annotations

import numpy as np

from bvmesh import io
from bvmesh.mesh import surface_mesh
from bvmesh.testing import make_phantom


def test_simpleitk_and_nibabel_reads_give_the_same_mesh(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    phantom = make_phantom((1.5, 1.5, 8.0), det_sign=-1, truth=False)
    nii = tmp_path / "labels.nii.gz"
    img = nib.Nifti1Image(phantom.labels, phantom.affine)
    img.set_sform(phantom.affine, code=1)
    img.set_qform(phantom.affine, code=1)
    nib.save(img, str(nii))
    mha = tmp_path / "labels.mha"
    sitk.WriteImage(sitk.ReadImage(str(nii)), str(mha))  # LPS on disk
    a, b = io.load(nii), io.load(mha)
    ma = surface_mesh(a.data.astype(np.uint8), a.affine)
    mb = surface_mesh(b.data.astype(np.uint8), b.affine)
    assert ma.faces.shape == mb.faces.shape
    assert np.allclose(ma.vertices, mb.vertices, atol=1e-3)
    # and both on the phantom's own world geometry
    direct = surface_mesh(phantom.labels, phantom.affine)
    assert np.allclose(direct.vertices, ma.vertices, atol=1e-3)

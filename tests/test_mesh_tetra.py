"""Tetrahedral meshes (optional gmsh) and the volume formats, each read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bvmesh.mesh import BASE, EPI, LV, RV, surface_mesh, tetra_mesh, write_mesh
from bvmesh.mesh.tetra import boundary_faces, dihedral_angles, tet_volumes
from bvmesh.testing import make_phantom

gmsh = pytest.importorskip("gmsh")


@pytest.fixture(scope="module")
def tet():
    phantom = make_phantom((1.5, 1.5, 8.0), det_sign=-1, truth=False)
    surf = surface_mesh(phantom.labels, phantom.affine)
    return surf, tetra_mesh(surf, edge_mm=2.0)


def test_tetra_mesh_is_valid_and_tagged(tet):
    surf, mesh = tet
    q = mesh.quality
    assert q["passed"], q["failed"]
    assert (tet_volumes(mesh.points, mesh.tetra) > 0).all()
    assert dihedral_angles(mesh.points, mesh.tetra).min() >= 10.0
    assert set(np.unique(mesh.triangle_tags)) == {BASE, RV, LV, EPI}
    # Same volume as the surface it fills, and a boundary that is the tets' own.
    assert abs(q["tetra"]["volume_ml"] - surf.quality["volume"]["mesh_ml"]) < 0.01 * \
        surf.quality["volume"]["mesh_ml"]
    assert len(boundary_faces(mesh.tetra)) == len(mesh.triangles)
    # Tag areas close to the surface's.
    for name in ("rv", "lv", "epi"):
        a, b = q["tag_area_mm2"][name], surf.quality["tag_area_mm2"][name]
        assert abs(a - b) < 0.1 * b, (name, a, b)
    assert 1.0 < q["tetra"]["edge_mm_median"] < 3.0


def _sigpipe_ignored() -> bool:
    """Whether the process ignores SIGPIPE, as the kernel sees it (not Python's record)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        mask = next(line for line in fh if line.startswith("SigIgn:"))
    return bool(int(mask.split()[1], 16) >> (13 - 1) & 1)  # SIGPIPE is signal 13


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
@pytest.mark.parametrize("in_thread", [False, True])
def test_tetra_keeps_the_process_signal_handling(in_thread):
    # gmsh.initialize() resets SIGPIPE to "terminate": a later write to a closed socket
    # killed the test run (the weights download tests) instead of raising BrokenPipeError.
    # Its wrapper also leaves SIGINT at the default, and raised in a worker thread (Dask's).
    import signal
    import threading

    from bvmesh.mesh.tetra import _generate

    surf = surface_mesh(*_phantom_labels())
    sigint = signal.getsignal(signal.SIGINT)
    assert _sigpipe_ignored()
    made = []
    run = lambda: made.append(_generate(gmsh, surf.vertices, surf.faces,  # noqa: E731
                                        edge_mm=3.0, angle_deg=40, threads=1, optimise=False))
    if in_thread:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    else:
        run()
    assert made and len(made[0][1]) > 100  # tetrahedra were made
    assert _sigpipe_ignored()
    assert signal.getsignal(signal.SIGINT) is sigint


def _phantom_labels():
    phantom = make_phantom((1.5, 1.5, 8.0), det_sign=1, truth=False)
    return phantom.labels, phantom.affine


def _check(points, tets, tris, tags, mesh, scale=1.0, atol=1e-6):
    assert np.allclose(np.asarray(points) / scale, mesh.points, atol=atol)
    assert np.array_equal(np.asarray(tets), mesh.tetra)
    assert np.array_equal(np.asarray(tris), mesh.triangles)
    assert np.array_equal(np.asarray(tags).ravel(), mesh.triangle_tags)


@pytest.mark.parametrize("ext,key", [("vtu", "tag"), ("msh", "gmsh:physical"),
                                     ("mesh", "medit:ref")])
def test_meshio_volume_round_trip(tet, tmp_path, ext, key):
    import meshio

    _, mesh = tet
    path = write_mesh(mesh, tmp_path / f"m.{ext}")[0]
    back = meshio.read(path)
    _check(back.points, back.cells_dict["tetra"], back.cells_dict["triangle"],
           back.cell_data_dict[key]["triangle"], mesh)


def test_xdmf_round_trip(tet, tmp_path):
    pytest.importorskip("h5py")
    import meshio

    _, mesh = tet
    files = write_mesh(mesh, tmp_path / "m.xdmf")
    assert {f.name for f in files} == {"m.xdmf", "m.h5", "m_facets.xdmf", "m_facets.h5"}
    vol, fac = meshio.read(tmp_path / "m.xdmf"), meshio.read(tmp_path / "m_facets.xdmf")
    assert np.allclose(vol.points, mesh.points) and np.allclose(fac.points, mesh.points)
    assert np.array_equal(vol.cells_dict["tetra"], mesh.tetra)
    assert np.array_equal(fac.cells_dict["triangle"], mesh.triangles)
    assert np.array_equal(fac.cell_data_dict["facet_tags"]["triangle"], mesh.triangle_tags)
    assert not list(tmp_path.glob(".m.xdmf*"))  # the temporary folder is gone


def test_carp_round_trip(tet, tmp_path):
    _, mesh = tet
    files = write_mesh(mesh, tmp_path / "m.pts")
    names = {f.name for f in files}
    assert {"m.pts", "m.elem", "m.lon", "m.lv.surf", "m.rv.vtx", "m.base.surf"} <= names
    lines = (tmp_path / "m.pts").read_text().splitlines()
    assert int(lines[0]) == len(mesh.points)
    pts = np.loadtxt(lines[1:])
    elem = [ln.split() for ln in (tmp_path / "m.elem").read_text().splitlines()[1:]]
    assert all(e[0] == "Tt" for e in elem)
    tets = np.array([[int(x) for x in e[1:5]] for e in elem])
    tris, tags = [], []
    for name, tag in (("base", BASE), ("rv", RV), ("lv", LV), ("epi", EPI)):
        rows = (tmp_path / f"m.{name}.surf").read_text().splitlines()
        assert int(rows[0]) == len(rows) - 1
        tri = np.array([[int(x) for x in r.split()[1:]] for r in rows[1:]])
        tris.append(tri)
        tags += [tag] * len(tri)
        vtx = (tmp_path / f"m.{name}.vtx").read_text().splitlines()
        assert vtx[1] == "intra" and np.array_equal(np.array(vtx[2:], int), np.unique(tri))
    tris = np.concatenate(tris)
    order = np.argsort(mesh.triangle_tags, kind="stable")
    _check(pts, tets, tris, tags, type(mesh)(mesh.points, mesh.tetra, mesh.triangles[order],
                                             mesh.triangle_tags[order], {}), scale=1000.0,
           atol=1e-6)
    lon = np.loadtxt((tmp_path / "m.lon").read_text().splitlines()[1:])
    assert lon.shape == (len(mesh.tetra), 3) and np.allclose(np.linalg.norm(lon, axis=1), 1, atol=1e-5)


def test_gmsh_opens_msh_with_four_tagged_surface_groups(tet, tmp_path):
    _, mesh = tet
    path = write_mesh(mesh, tmp_path / "m.msh")[0]
    gmsh.initialize()
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.open(str(path))
        groups = {(d, t): gmsh.model.getPhysicalName(d, t) for d, t in gmsh.model.getPhysicalGroups()}
        assert groups == {(2, 10): "base", (2, 20): "rv", (2, 30): "lv", (2, 40): "epi",
                          (3, 1): "myocardium"}
        n = sum(len(gmsh.model.mesh.getElementsByType(2, e)[0])
                for e in gmsh.model.getEntitiesForPhysicalGroup(2, 30))
        assert n == int((mesh.triangle_tags == LV).sum())
    finally:
        gmsh.finalize()


def test_cli_tetra_msh_opens_in_gmsh(tmp_path):
    import json

    import nibabel as nib
    from typer.testing import CliRunner

    from bvmesh.cli.main import app

    phantom = make_phantom((1.5, 1.5, 8.0), truth=False)
    src = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(phantom.labels, phantom.affine), str(src))
    res = CliRunner().invoke(app, ["mesh", str(src), "-o", str(tmp_path / "heart"), "--tetra",
                                   "--format", "msh", "--edge-mm", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "heart.quality.json").read_text())
    assert report["quality"]["passed"] and report["quality"]["surface"]["passed"]
    gmsh.initialize()
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.open(str(tmp_path / "heart.msh"))
        names = {gmsh.model.getPhysicalName(d, t) for d, t in gmsh.model.getPhysicalGroups(2)}
        assert names == {"base", "rv", "lv", "epi"}
    finally:
        gmsh.finalize()

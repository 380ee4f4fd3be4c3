"""Every export format read back by an independent reader: same points, cells and tags."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from bvmesh.errors import InputError, OutputError
from bvmesh.mesh import surface_mesh, write_mesh
from bvmesh.testing import make_phantom


@pytest.fixture(scope="module")
def surf():
    phantom = make_phantom((1.5, 1.5, 8.0), det_sign=-1, truth=False)
    return surface_mesh(phantom.labels, phantom.affine)


def _same_surface(points, faces, tags, surf, atol=1e-9):
    """Same triangles (as vertex coordinates, in order) and tags."""
    assert len(faces) == len(surf.faces)
    assert np.allclose(points[faces], surf.vertices[surf.faces], atol=atol)
    assert np.array_equal(np.asarray(tags).ravel(), surf.face_tags)


def _vtk_array(node) -> np.ndarray:
    dtype = {"Float64": "<f8", "Int32": "<i4", "Int64": "<i8"}[node.get("type")]
    raw = base64.b64decode(node.text.strip())
    size = int(np.frombuffer(raw[:8], "<u8")[0])
    return np.frombuffer(raw[8:8 + size], dtype)


def test_vtp_round_trip(surf, tmp_path):
    path = write_mesh(surf, tmp_path / "m.vtp")[0]
    piece = ET.parse(path).getroot().find("PolyData/Piece")
    points = _vtk_array(piece.find("Points/DataArray")).reshape(-1, 3)
    polys = {a.get("Name"): _vtk_array(a) for a in piece.find("Polys")}
    assert np.array_equal(polys["offsets"], np.arange(1, len(surf.faces) + 1) * 3)
    faces = polys["connectivity"].reshape(-1, 3)
    tags = _vtk_array(piece.find("CellData/DataArray[@Name='tag']"))
    _same_surface(points, faces, tags, surf)


def test_stl_round_trip(surf, tmp_path):
    import trimesh

    path = write_mesh(surf, tmp_path / "m.stl")[0]
    mesh = trimesh.load(path, process=False)
    assert np.allclose(mesh.vertices.reshape(-1, 3, 3), surf.vertices[surf.faces], atol=1e-4)
    rec = np.frombuffer(path.read_bytes()[84:], dtype=[("n", "<f4", 3), ("v", "<f4", 9),
                                                       ("attr", "<u2")])
    assert np.array_equal(rec["attr"], surf.face_tags)
    merged = trimesh.load(path)  # merged vertices: still a closed, outward shell
    assert merged.is_watertight and merged.volume > 0


def test_obj_round_trip(surf, tmp_path):
    import trimesh

    path = write_mesh(surf, tmp_path / "m.obj")[0]
    mesh = trimesh.load(path, process=False, force="mesh", group_material=False)
    assert np.allclose(mesh.vertices, surf.vertices, atol=1e-6)
    groups, tags = None, []
    names = {"base": 10, "rv": 20, "lv": 30, "epi": 40}
    for line in path.read_text().splitlines():
        if line.startswith("g "):
            groups = names[line.split()[1]]
        elif line.startswith("f "):
            tags.append(groups)
    # Faces come grouped by tag: compare as sorted triangle sets.
    assert sorted(tags) == sorted(surf.face_tags.tolist())
    assert mesh.is_watertight and len(mesh.faces) == len(surf.faces)


def test_ply_round_trip(surf, tmp_path):
    import trimesh

    path = write_mesh(surf, tmp_path / "m.ply")[0]
    mesh = trimesh.load(path, process=False)
    raw = mesh.metadata["_ply_raw"]["face"]["data"]
    _same_surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), raw["tag"], surf)


@pytest.mark.parametrize("ext", ["vtu", "msh", "mesh"])
def test_surface_in_meshio_formats(surf, tmp_path, ext):
    import meshio

    path = write_mesh(surf, tmp_path / f"m.{ext}")[0]
    mesh = meshio.read(path)
    key = {"vtu": "tag", "msh": "gmsh:physical", "mesh": "medit:ref"}[ext]
    _same_surface(mesh.points, mesh.cells_dict["triangle"], mesh.cell_data_dict[key]["triangle"],
                  surf, atol=1e-6)


def test_bad_paths(surf, tmp_path):
    with pytest.raises(InputError, match="unknown mesh format"):
        write_mesh(surf, tmp_path / "m.xyz")
    with pytest.raises(InputError, match="--tetra"):
        write_mesh(surf, tmp_path / "m.pts")
    with pytest.raises(OutputError, match="does not exist"):
        write_mesh(surf, tmp_path / "nope" / "m.vtp")
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("elev, front", [(90, 0), (-90, 2)])
def test_the_mesh_picture_shows_the_face_nearest_the_viewer(elev, front):
    """mesh.png's z-buffer: a small red square above a large blue one; seen from above the
    red one covers the centre, from below the blue one does; beyond both, white."""
    from bvmesh.mesh.render import _view_rotation, draw

    square = np.array([[[-1, -1, 0], [1, -1, 0], [1, 1, 0]], [[-1, -1, 0], [1, 1, 0], [-1, 1, 0]]], float)
    tri = np.concatenate([square * 0.5 + [0, 0, 1], square])
    rgb = np.array([[1, 0, 0]] * 2 + [[0, 0, 1]] * 2, float)
    image = draw(tri, rgb, _view_rotation(elev, -90), lim=1.0, size=100)
    centre = image[50, 50]
    assert centre[front] > 0.4 and centre[2 - front] == 0 and centre[1] == 0
    assert image[85, 85, 2] > 0.4 and image[85, 85, 0] == 0  # the blue square's rim
    assert (image[2, 2] == 1).all()

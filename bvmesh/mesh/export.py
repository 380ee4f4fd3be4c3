"""Mesh writers, chosen by file extension. Every file is written atomically.

Surface (triangles + ``tag`` per face, ldrb markers): .vtp (VTK PolyData, tag as cell
data), .stl (binary; the tag in each triangle's 2-byte attribute), .obj (one group per
tag), .ply (binary; face property ``tag``).
Volume (tetrahedra + tagged boundary triangles): .vtu (ParaView; cell data ``tag``),
.xdmf (+ .h5, and ``<stem>_facets.xdmf`` with ``facet_tags``: FEniCS/dolfinx; needs
h5py), .msh (gmsh 2.2 ASCII with physical groups base 10, rv 20, lv 30, epi 40,
myocardium 1: ldrb, dolfinx), .mesh (medit, tags as refs), .pts (openCARP: .pts in
micrometres, .elem, .lon, and per tag ``<stem>.<tag>.surf`` / ``.vtx``).
meshio writes vtu, xdmf, msh and medit; the formats it lacks or mangles (vtp, tagged
stl/obj/ply, openCARP) have small writers here.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from ..io import atomic_write
from .tags import TAG_NAMES

SURFACE_FORMATS = (".vtp", ".stl", ".obj", ".ply")
VOLUME_FORMATS = (".vtu", ".xdmf", ".msh", ".mesh", ".pts")
#: --format names -> extension.
FORMAT_SUFFIX = {"vtp": ".vtp", "stl": ".stl", "obj": ".obj", "ply": ".ply", "vtu": ".vtu",
                 "xdmf": ".xdmf", "msh": ".msh", "medit": ".mesh", "carp": ".pts"}
#: Physical group of the tetrahedra in .msh / medit / openCARP region.
MYOCARDIUM_TAG = 1


def write_mesh(mesh, path: str | os.PathLike) -> list[Path]:
    """Write a SurfaceMesh or TetraMesh; the format comes from the extension (see module).

    A TetraMesh written to a surface format writes its tagged boundary. Returns every
    file written (some formats are several files). Raises InputError for an unknown
    extension or a volume-only format given a surface, OutputError when it cannot write.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    is_tetra = hasattr(mesh, "tetra")
    if is_tetra:
        verts, faces, tags = mesh.points, mesh.triangles, mesh.triangle_tags
    else:
        verts, faces, tags = mesh.vertices, mesh.faces, mesh.face_tags
    verts = np.asarray(verts, np.float64)
    faces = np.asarray(faces, np.int64)
    tags = np.asarray(tags, np.int64)
    if not path.parent.exists():
        raise OutputError(f"{path}: folder {path.parent} does not exist; create it first")
    if suffix == ".vtp":
        return [atomic_write(path, lambda tmp: _write_vtp(tmp, verts, faces, tags))]
    if suffix == ".stl":
        return [atomic_write(path, lambda tmp: _write_stl(tmp, verts, faces, tags))]
    if suffix == ".obj":
        return [atomic_write(path, lambda tmp: _write_obj(tmp, verts, faces, tags))]
    if suffix == ".ply":
        return [atomic_write(path, lambda tmp: _write_ply(tmp, verts, faces, tags))]
    if suffix not in VOLUME_FORMATS:
        raise InputError(f"{path}: unknown mesh format {suffix!r}; use one of "
                         f"{', '.join(SURFACE_FORMATS + VOLUME_FORMATS)}")
    tetra = np.asarray(mesh.tetra, np.int64) if is_tetra else None
    if tetra is None and suffix in (".pts", ".xdmf"):
        raise InputError(f"{path}: {suffix} holds a volume mesh; mesh with --tetra "
                         "(bvmesh.mesh.tetra_mesh) or choose .vtp/.stl/.obj/.ply/.vtu/.msh")
    if suffix == ".pts":
        return _write_set(path, lambda d: _write_carp(d / path.name, verts, faces, tags, tetra,
                                                      getattr(mesh, "base_plane", None)))
    if suffix == ".xdmf":
        return _write_set(path, lambda d: _write_xdmf(d / path.name, verts, faces, tags, tetra))
    return [atomic_write(path, lambda tmp: _write_meshio(tmp, suffix, verts, faces, tags, tetra))]


def _write_set(path: Path, write) -> list[Path]:
    """Write several files into a temporary folder beside ``path``, then move each into
    place (data files before the files that reference them)."""
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        names = write(tmpdir)
        out = []
        for name in names:
            os.replace(tmpdir / name, path.parent / name)
            out.append(path.parent / name)
        return out
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); check the folder "
                          "is writable") from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _b64(array: np.ndarray) -> str:
    raw = np.ascontiguousarray(array).tobytes()
    return base64.b64encode(np.uint64(len(raw)).tobytes() + raw).decode("ascii")


def _write_vtp(path: Path, verts, faces, tags) -> None:
    offsets = np.arange(1, len(faces) + 1, dtype=np.int64) * 3
    names = " ".join(f"{t}={n}" for t, n in TAG_NAMES.items())
    pts, tag = _b64(verts.astype("<f8")), _b64(tags.astype("<i4"))
    conn, offs = _b64(faces.astype("<i8").ravel()), _b64(offsets.astype("<i8"))
    counts = 'NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0"'
    text = f"""<?xml version="1.0"?>
<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">
  <PolyData>
    <Piece NumberOfPoints="{len(verts)}" {counts} NumberOfPolys="{len(faces)}">
      <Points>
        <DataArray type="Float64" NumberOfComponents="3" format="binary">{pts}</DataArray>
      </Points>
      <CellData Scalars="tag">
        <DataArray type="Int32" Name="tag" format="binary">{tag}</DataArray>
      </CellData>
      <Polys>
        <DataArray type="Int64" Name="connectivity" format="binary">{conn}</DataArray>
        <DataArray type="Int64" Name="offsets" format="binary">{offs}</DataArray>
      </Polys>
    </Piece>
  </PolyData>
  <!-- bvmesh: world RAS mm; tag (ldrb markers) {names} -->
</VTKFile>
"""
    Path(path).write_text(text, encoding="utf-8")


def _write_stl(path: Path, verts, faces, tags) -> None:
    rec = np.zeros(len(faces), dtype=[("normal", "<f4", 3), ("v", "<f4", (3, 3)),
                                      ("attr", "<u2")])
    p = verts[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    rec["normal"] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    rec["v"] = p
    rec["attr"] = tags
    header = b"bvmesh surface, world RAS mm, ldrb tag in attribute bytes".ljust(80, b" ")
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(np.uint32(len(faces)).tobytes())
        fh.write(rec.tobytes())


def _write_obj(path: Path, verts, faces, tags) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# bvmesh surface, world RAS mm; one group per ldrb tag\n")
        np.savetxt(fh, verts, fmt="v %.9g %.9g %.9g")
        for t in np.unique(tags):
            fh.write(f"g {TAG_NAMES.get(int(t), f'tag{int(t)}')}\n")
            np.savetxt(fh, faces[tags == t] + 1, fmt="f %d %d %d")


def _write_ply(path: Path, verts, faces, tags) -> None:
    header = (f"ply\nformat binary_little_endian 1.0\ncomment bvmesh surface, world RAS mm\n"
              f"element vertex {len(verts)}\nproperty double x\nproperty double y\n"
              f"property double z\nelement face {len(faces)}\n"
              "property list uchar int vertex_indices\nproperty int tag\nend_header\n")
    rec = np.zeros(len(faces), dtype=[("n", "u1"), ("v", "<i4", 3), ("tag", "<i4")])
    rec["n"], rec["v"], rec["tag"] = 3, faces, tags
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(verts.astype("<f8").tobytes())
        fh.write(rec.tobytes())


def _field_data() -> dict:
    data = {name: np.array([tag, 2]) for tag, name in TAG_NAMES.items()}
    data["myocardium"] = np.array([MYOCARDIUM_TAG, 3])
    return data


def _write_meshio(path: Path, suffix: str, verts, faces, tags, tetra) -> None:
    import meshio

    cells = [("triangle", faces)]
    cell_tags = [tags]
    if tetra is not None:
        cells.append(("tetra", tetra))
        cell_tags.append(np.full(len(tetra), MYOCARDIUM_TAG, np.int64))
    if suffix == ".msh":
        data = {"gmsh:physical": cell_tags, "gmsh:geometrical": cell_tags}
        meshio.write(path, meshio.Mesh(verts, cells, cell_data=data, field_data=_field_data()),
                     file_format="gmsh22", binary=False)
    elif suffix == ".mesh":
        meshio.write(path, meshio.Mesh(verts, cells, cell_data={"medit:ref": cell_tags}),
                     file_format="medit")
    else:
        meshio.write(path, meshio.Mesh(verts, cells, cell_data={"tag": cell_tags}),
                     file_format="vtu")


def _write_xdmf(path: Path, verts, faces, tags, tetra) -> list[str]:
    import meshio

    try:
        import h5py  # noqa: F401
    except ImportError:
        raise InputError("writing .xdmf needs h5py: pip install 'bvmesh[tetra]' "
                         "(or pip install h5py)") from None
    facets = path.with_name(path.stem + "_facets.xdmf")
    meshio.write(path, meshio.Mesh(verts, [("tetra", tetra)], cell_data={
        "cell_tags": [np.full(len(tetra), MYOCARDIUM_TAG, np.int32)]}), file_format="xdmf")
    meshio.write(facets, meshio.Mesh(verts, [("triangle", faces)], cell_data={
        "facet_tags": [tags.astype(np.int32)]}), file_format="xdmf")
    return [path.stem + ".h5", facets.stem + ".h5", path.name, facets.name]


def _write_carp(path: Path, verts, faces, tags, tetra, base_plane) -> list[str]:
    """openCARP: .pts (um), .elem, .lon (placeholder circumferential fibres), .surf/.vtx."""
    stem = path.with_suffix("")
    names = []

    def emit(suffix: str, text_head: str, body: np.ndarray, fmt: str) -> None:
        target = Path(f"{stem}{suffix}")
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text_head)
            if len(body):
                np.savetxt(fh, body, fmt=fmt)
        names.append(target.name)

    emit(".pts", f"{len(verts)}\n", verts * 1000.0, "%.3f")
    elem = np.column_stack([tetra, np.full(len(tetra), MYOCARDIUM_TAG)])
    emit(".elem", f"{len(tetra)}\n", elem, "Tt %d %d %d %d %d")
    # Placeholder fibres: circumferential about the long axis. Replace with rule-based
    # fibres (ldrb) for simulation; openCARP needs a .lon to load the mesh at all.
    centres = verts[tetra].mean(axis=1)
    axis = np.asarray(base_plane[1], float) if base_plane is not None else np.array([0, 0, 1.0])
    radial = centres - centres.mean(axis=0)
    fib = np.cross(axis, radial)
    norm = np.linalg.norm(fib, axis=1, keepdims=True)
    fib = np.where(norm > 1e-9, fib / np.maximum(norm, 1e-12), [1.0, 0.0, 0.0])
    emit(".lon", "1\n", fib, "%.6f %.6f %.6f")
    for t, name in TAG_NAMES.items():
        sel = faces[tags == t]
        emit(f".{name}.surf", f"{len(sel)}\n", sel, "Tr %d %d %d")
        nodes = np.unique(sel)
        emit(f".{name}.vtx", f"{len(nodes)}\nintra\n", nodes[:, None], "%d")
    return names

"""Tetrahedral meshes of the myocardium with gmsh (optional: ``pip install 'bvmesh[tetra]'``).

gmsh is GPL-2-or-later; it is imported only here, only when asked for, and is not a
dependency of bvmesh (MIT). The tagged surface is re-parametrised by gmsh (surface
patches split at sharp edges such as the base rim), remeshed at ``edge_mm`` and
filled with tetrahedra (HXT, then optimised). Each boundary patch takes the tag most
of its triangles sit on in the input surface.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

import numpy as np
from scipy.spatial import cKDTree

from ..errors import BvmeshError, InputError
from .meshes import TetraMesh
from .quality import quality_report

log = logging.getLogger(__name__)

#: gmsh optimisers tried in turn while slivers remain (one Netgen pass left 4-8 degree
#: slivers on the 8 mm phantom at some edge lengths).
OPTIMISERS = ("Netgen", "Relocate3D", "Netgen", "", "Netgen")
#: Smallest dihedral angle (degrees) the gate accepts.
MIN_DIHEDRAL_DEG = 10.0
#: Edges sharper than these (degrees) split the surface into patches that gmsh
#: parametrises and remeshes, tried in turn when gmsh cannot parametrise a patch. With
#: the square base rim (~90 degrees), 60 failed on the isotropic phantom and took 78 s on
#: an ACDC prediction; 90 met both (9 and 15 s); 40 failed on the 8 mm phantom.
FEATURE_ANGLES_DEG = (90.0, 60.0, 120.0)


def _gmsh():
    try:
        import gmsh
    except ImportError:
        raise InputError("--tetra needs gmsh (GPL, an optional extra): "
                         "pip install 'bvmesh[tetra]'  (or: pip install gmsh)") from None
    return gmsh


def tet_volumes(points: np.ndarray, tetra: np.ndarray) -> np.ndarray:
    """Signed volumes (mm^3); positive for a right-handed (a, b, c, d)."""
    p = points[tetra]
    return np.einsum("ij,ij->i", p[:, 1] - p[:, 0],
                     np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0])) / 6.0


def dihedral_angles(points: np.ndarray, tetra: np.ndarray) -> np.ndarray:
    """The six interior dihedral angles (degrees) of each tetrahedron, (K, 6)."""
    p = points[tetra]
    # Outward-ish face normals: face k is opposite vertex k.
    faces = [(1, 2, 3), (0, 3, 2), (0, 1, 3), (0, 2, 1)]
    normals = []
    for a, b, c in faces:
        n = np.cross(p[:, b] - p[:, a], p[:, c] - p[:, a])
        normals.append(n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300))
    out = []
    for i in range(4):
        for j in range(i + 1, 4):
            cos = -np.einsum("ij,ij->i", normals[i], normals[j])
            out.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return np.stack(out, axis=1)


def boundary_faces(tetra: np.ndarray) -> np.ndarray:
    """Triangles that belong to exactly one tetrahedron, wound outward."""
    f = np.concatenate([tetra[:, [1, 2, 3]], tetra[:, [0, 3, 2]], tetra[:, [0, 1, 3]],
                        tetra[:, [0, 2, 1]]])
    key = np.sort(f, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return f[counts[inv.ravel()] == 1]


#: The signals gmsh's initialisation changes (SIGPIPE exists on POSIX only).
_KEPT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGPIPE") if hasattr(signal, name))


@contextlib.contextmanager
def _gmsh_session(gmsh):
    """gmsh initialised, then finalised, with the process's signal handling kept.

    gmsh.initialize() resets SIGPIPE to the C default: a later write to a closed pipe or
    socket (a download the other side dropped, `bvmesh ... | head`, a Dask worker's
    connection) killed the whole process instead of raising BrokenPipeError, as Python
    ignores that signal. Its Python wrapper also sets SIGINT to the default so that Ctrl-C
    stops a long meshing call, and never puts it back (nor can it, outside the main thread,
    where it raises instead). Both are put back as they were.
    """
    main = threading.current_thread() is threading.main_thread()
    kept = {signum: signal.getsignal(signum) for signum in _KEPT_SIGNALS}
    gmsh.initialize(["-noenv"], interruptible=main)
    # SIGINT stays gmsh's for the session, so that Ctrl-C stops a long meshing call.
    _restore({s: h for s, h in kept.items() if s != signal.SIGINT}, main)
    try:
        yield gmsh
    finally:
        gmsh.finalize()
        _restore(kept, main)


def _restore(kept: dict, main: bool) -> None:
    """Put back the handlers in ``kept`` (signal -> handler as signal.getsignal gave it)."""
    for signum, handler in kept.items():
        if handler is None:  # not set from Python: nothing of ours to put back
            continue
        if main:
            signal.signal(signum, handler)
        elif handler == signal.SIG_IGN:  # signal.signal is for the main thread only; libc is not
            import ctypes

            ctypes.CDLL(None).signal(int(signum), ctypes.c_void_p(1))  # 1 is SIG_IGN


def _generate(gmsh, verts: np.ndarray, faces: np.ndarray, *, edge_mm: float, angle_deg: float,
              threads: int, optimise: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One gmsh session: patches split at ``angle_deg``, remeshed, filled by HXT and
    optimised while slivers remain. Returns (points, tetra, notes); raises gmsh's errors."""
    notes: list[str] = []
    with _gmsh_session(gmsh):
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", threads)
        gmsh.model.add("bvmesh")
        s = gmsh.model.addDiscreteEntity(2)
        gmsh.model.mesh.addNodes(2, s, np.arange(1, len(verts) + 1), verts.ravel())
        gmsh.model.mesh.addElementsByType(s, 2, [], (faces + 1).ravel())
        gmsh.model.mesh.classifySurfaces(np.radians(angle_deg), True, True, np.pi)
        gmsh.model.mesh.createGeometry()
        patches = [t for _, t in gmsh.model.getEntities(2)]
        loop = gmsh.model.geo.addSurfaceLoop(patches)
        gmsh.model.geo.addVolume([loop])
        gmsh.model.geo.synchronize()
        for name, value in (("Mesh.MeshSizeMax", edge_mm), ("Mesh.MeshSizeMin", 0.5 * edge_mm),
                            ("Mesh.MeshSizeFromCurvature", 0), ("Mesh.Algorithm", 6),
                            ("Mesh.Algorithm3D", 10), ("Mesh.Optimize", int(optimise)),
                            ("Mesh.OptimizeNetgen", int(optimise))):
            gmsh.option.setNumber(name, value)
        gmsh.model.mesh.generate(3)
        points, tetra = _read_tetra(gmsh)
        passes = []
        for method in OPTIMISERS if optimise else ():
            if dihedral_angles(points, tetra).min() >= MIN_DIHEDRAL_DEG:
                break
            # Slivers left by HXT's own optimiser: gmsh's optimisers in turn (slower).
            gmsh.model.mesh.optimize(method)
            points, tetra = _read_tetra(gmsh)
            passes.append(method or "default")
        if passes:
            notes.append(f"tetra: slivers after HXT; ran gmsh's optimisers {', '.join(passes)}")
        return points, tetra, notes


def tetra_mesh(surf, *, edge_mm: float = 1.5, threads: int = 2, optimise: bool = True):
    """A tetrahedral mesh of the volume inside ``surf`` (a SurfaceMesh).

    edge_mm: target edge length (mm). Raises InputError when gmsh is missing and
    BvmeshError when gmsh fails; a mesh that is made but fails the element checks is
    returned with ``quality["passed"]`` False (never raised here).
    """
    gmsh = _gmsh()
    failures = []
    for angle in FEATURE_ANGLES_DEG:
        try:
            points, tetra, notes = _generate(gmsh, surf.vertices, surf.faces, edge_mm=edge_mm,
                                             angle_deg=angle, threads=threads, optimise=optimise)
            break
        except InputError:
            raise
        except Exception as exc:  # gmsh raises bare Exceptions with its log message
            failures.append(f"{angle:g} deg: {exc}")
    else:
        raise BvmeshError(f"gmsh could not mesh the surface ({'; '.join(failures)}); check the "
                          "surface's quality report, or try another --edge-mm")
    if failures:
        notes.insert(0, f"tetra: gmsh could not parametrise the patches at {failures[0]}; "
                        f"used {angle:g} degree patches")
    # Keep only the nodes the tetrahedra use, oriented positive.
    used = np.unique(tetra)
    remap = np.full(len(points), -1, np.int64)
    remap[used] = np.arange(len(used))
    points, tetra = points[used], remap[tetra]
    vol = tet_volumes(points, tetra)
    if (vol < 0).sum() > len(vol) / 2:
        tetra = tetra[:, [0, 2, 1, 3]]
        vol = -vol
    # The boundary of the tetrahedra, wound outward, tagged face by face.
    triangles = boundary_faces(tetra)
    triangle_tags = _transfer_tags(points, triangles, surf)
    quality = quality_report(points, triangles, triangle_tags,
                             voxel_volume_mm3=surf.quality.get("volume", {}).get("mesh_ml", 0) * 1000
                             or None)
    dihedral = dihedral_angles(points, tetra)
    items = {
        "inverted_elements": {"value": int((vol <= 0).sum()), "limit": 0},
        "min_dihedral_deg": {"value": round(float(dihedral.min()), 3), "limit": MIN_DIHEDRAL_DEG,
                             "p01_deg": round(float(np.percentile(dihedral.min(axis=1), 1)), 3)},
    }
    items["inverted_elements"]["passed"] = items["inverted_elements"]["value"] == 0
    items["min_dihedral_deg"]["passed"] = bool(dihedral.min() >= MIN_DIHEDRAL_DEG)
    quality.update(items)
    quality["failed"] = quality["failed"] + [k for k, v in items.items() if not v["passed"]]
    quality["passed"] = not quality["failed"]
    edges = np.concatenate([tetra[:, [i, j]] for i in range(4) for j in range(i + 1, 4)])
    lengths = np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1)
    quality["tetra"] = {"elements": int(len(tetra)), "nodes": int(len(points)),
                        "edge_mm_median": round(float(np.median(lengths)), 3),
                        "volume_ml": round(float(vol.sum()) / 1000, 3)}
    notes.append(f"tetra: {len(tetra)} elements, median edge {np.median(lengths):.2f} mm "
                 f"(target {edge_mm:g}), min dihedral {dihedral.min():.1f} deg (gmsh HXT)")
    return TetraMesh(points, tetra, triangles, triangle_tags, quality, tuple(notes),
                     surf.base_plane)


def _read_tetra(gmsh) -> tuple[np.ndarray, np.ndarray]:
    node_tags, coords, _ = gmsh.model.mesh.getNodes()
    points = coords.reshape(-1, 3)
    index = np.zeros(int(node_tags.max()) + 1, np.int64)
    index[node_tags.astype(np.int64)] = np.arange(len(node_tags))
    _, tet_nodes = gmsh.model.mesh.getElementsByType(4)
    return points, index[tet_nodes.astype(np.int64)].reshape(-1, 4)


def _transfer_tags(points: np.ndarray, triangles: np.ndarray, surf) -> np.ndarray:
    """Tags of the remeshed boundary: base where a triangle lies on the base plane,
    otherwise the tag of the nearest input face facing the same way, then a vote."""
    from .tags import BASE, face_neighbours, face_normals

    normals, _ = face_normals(points, triangles)
    centres = points[triangles].mean(axis=1)
    src_normals, _ = face_normals(surf.vertices, surf.faces)
    src_centres = surf.vertices[surf.faces].mean(axis=1)
    tree = cKDTree(src_centres)
    _, near = tree.query(centres, k=8)
    facing = np.einsum("ikj,ij->ik", src_normals[near], normals) > 0.3
    pick = np.where(facing.any(axis=1), near[np.arange(len(near)), np.argmax(facing, axis=1)],
                    near[:, 0])
    tags = surf.face_tags[pick].copy()
    is_base = np.zeros(len(triangles), bool)
    if surf.base_plane is not None:
        point, normal = surf.base_plane
        d = np.abs((points[triangles] - point) @ normal)
        is_base = (d.max(axis=1) < 1e-2) & (normals @ normal > 0.99)
    tags[is_base] = BASE
    tags[~is_base & (tags == BASE)] = 0
    nb = face_neighbours(triangles)
    choices = np.array([20, 30, 40])
    for _ in range(4):
        group = np.concatenate([tags[:, None], np.append(tags, 0)[nb]], axis=1)
        counts = np.stack([(group == c).sum(axis=1) for c in choices], axis=1)
        own = (tags[:, None] == choices[None, :]).astype(int)
        best = choices[np.argmax(2 * counts + own, axis=1)]
        new = np.where(~is_base & (counts.max(axis=1) > 0), best, tags)
        if np.array_equal(new, tags):
            break
        tags = new
    tags[tags == 0] = 40
    return tags.astype(np.int64)

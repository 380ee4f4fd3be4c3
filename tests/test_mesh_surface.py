"""Surface meshes of analytic phantoms: geometry in world mm, topology, tags, the gate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from bvmesh.errors import GeometryError, InputError
from bvmesh.mesh import BASE, EPI, LV, RV, surface_mesh
from bvmesh.mesh.quality import quality_report
from bvmesh.mesh.surface import signed_volume
from bvmesh.testing import hole_in_lv_wall, make_phantom


def face_areas(surf):
    v, f = surf.vertices, surf.faces
    return np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1) / 2


def truth_metrics(surf, phantom):
    """Mesh-to-truth vertex distances (mm) and the area fraction whose tag matches."""
    tree = cKDTree(phantom.truth_points)
    dist, _ = tree.query(surf.vertices)
    _, nearest = tree.query(surf.vertices[surf.faces].mean(axis=1))
    area = face_areas(surf)
    agree = float((area * (phantom.truth_tags[nearest] == surf.face_tags)).sum() / area.sum())
    back, _ = cKDTree(surf.vertices).query(phantom.truth_points)  # truth covered by the mesh
    return dist, agree, back


@pytest.fixture(scope="module", params=[1, -1], ids=["det+", "det-"])
def iso(request):
    phantom = make_phantom((1.25, 1.25, 1.25), det_sign=request.param,
                           base_at_start=request.param < 0)
    return phantom, surface_mesh(phantom.labels, phantom.affine)


@pytest.fixture(scope="module")
def thick():
    phantom = make_phantom((1.5, 1.5, 8.0), det_sign=-1, oblique=(-25.0, 10.0, 70.0))
    return phantom, surface_mesh(phantom.labels, phantom.affine)


def test_isotropic_mesh_lies_on_the_true_surface(iso):
    phantom, surf = iso
    assert np.sign(np.linalg.det(phantom.affine[:3, :3])) in (1, -1)
    dist, agree, back = truth_metrics(surf, phantom)
    assert np.median(dist) < 0.5 and np.percentile(dist, 95) < 1.5, (np.median(dist),
                                                                    np.percentile(dist, 95))
    assert np.percentile(back, 95) < 1.5  # and the mesh covers the whole true surface
    assert agree >= 0.95, agree
    assert set(np.unique(surf.face_tags)) == {BASE, RV, LV, EPI}


def test_isotropic_mesh_passes_the_gate(iso):
    _, surf = iso
    q = surf.quality
    assert q["passed"], q["failed"]
    assert q["euler_characteristic"]["value"] == 2 and q["euler_characteristic"]["genus"] == 0
    assert q["self_intersections"]["value"] == 0 and q["non_manifold_edges"]["value"] == 0
    assert abs(q["volume"]["value"]) < 0.02
    assert signed_volume(surf.vertices, surf.faces) > 0  # outward whatever det(A)
    assert surf.vertices.dtype == np.float64 and surf.faces.shape[1] == 3
    import json
    json.dumps(q)  # the report must be JSON-serialisable


def test_base_is_a_planar_cut_at_the_true_base(iso):
    phantom, surf = iso
    point, normal = surf.base_plane
    assert abs(normal @ phantom.base_normal) > 0.9999
    assert abs((phantom.base_point - point) @ normal) < 1e-6
    base = surf.vertices[np.unique(surf.faces[surf.face_tags == BASE])]
    assert np.abs((base - point) @ normal).max() < 1e-6
    # Nothing lies beyond the base, and the base cap is the true base ring's size (no
    # chamfer: with one, this phantom's 2.8-voxel RV wall lost a fifth of the area).
    assert ((surf.vertices - point) @ normal).max() < 1e-3
    truth_base = phantom.truth_tags == BASE
    true_area = truth_base.sum() * 0.25**2  # truth samples lie on a 0.25 mm grid
    area = face_areas(surf)[surf.face_tags == BASE].sum()
    assert abs(area - true_area) / true_area < 0.05, (area, true_area)


def test_base_cap_of_a_thick_cylinder_is_its_whole_ring():
    """A shell of radii 10 and 20 mm cut square: the cap is the ring, not the ring inset
    by half a voxel (the chamfer a cut exactly at the plane would leave)."""
    h = 1.25
    z, y, x = (np.indices((36, 52, 52)) - [[[[0]]], [[[25.5]]], [[[25.5]]]]) * h
    r = np.hypot(x, y)
    labels = np.where(r < 10, 1, np.where(r < 20, 2, 0)).astype(np.uint8)
    labels[z < 3 * h] = 2  # a closed apex
    labels[z > 30 * h] = 0
    labels[:2], labels[:, :2], labels[:, -2:], labels[:, :, :2], labels[:, :, -2:] = 0, 0, 0, 0, 0
    affine = np.diag([h, h, h, 1.0])
    surf = surface_mesh(labels, affine, base_plane=(np.array([31 * h - h / 2, 0, 0]),
                                                    np.array([1.0, 0, 0])))
    area = face_areas(surf)[surf.face_tags == BASE].sum()
    ring, inset = np.pi * (20**2 - 10**2), np.pi * ((20 - h / 2) ** 2 - (10 + h / 2) ** 2)
    assert surf.quality["passed"], surf.quality["failed"]
    assert abs(area - ring) / ring < 0.02, (area, ring, inset)


def test_thick_stack_is_upsampled_repaired_and_meshed(thick):
    phantom, surf = thick
    assert any("shape-based" in n for n in surf.notes)
    assert any("topology repair" in n for n in surf.notes)
    q = surf.quality
    assert q["passed"], q["failed"]
    dist, agree, _ = truth_metrics(surf, phantom)
    assert np.median(dist) < 0.6 and np.percentile(dist, 95) < 2.0
    assert agree >= 0.93, agree


def test_repair_removes_a_handle_through_the_wall():
    phantom = make_phantom((1.5, 1.5, 8.0), truth=False)
    holed = hole_in_lv_wall(phantom.labels, slice_axis=2)
    raw = surface_mesh(holed, phantom.affine, repair_topology=False)
    fixed = surface_mesh(holed, phantom.affine)
    assert raw.quality["euler_characteristic"]["genus"] > 0
    assert not raw.quality["passed"] and "euler_characteristic" in raw.quality["failed"]
    assert fixed.quality["euler_characteristic"]["genus"] == 0


def test_explicit_base_plane_cuts_there():
    phantom = make_phantom((1.25, 1.25, 1.25), truth=False)
    point = phantom.base_point - 10.0 * phantom.base_normal
    surf = surface_mesh(phantom.labels, phantom.affine, base_plane=(point, 2 * phantom.base_normal))
    assert surf.quality["passed"], surf.quality["failed"]
    assert ((surf.vertices - point) @ phantom.base_normal).max() < 1e-3
    base = surf.vertices[np.unique(surf.faces[surf.face_tags == BASE])]
    assert len(base) > 100 and np.abs((base - point) @ phantom.base_normal).max() < 1e-6


def test_acdc_like_map_without_rv_myocardium_gets_a_geometric_wall():
    phantom = make_phantom((1.5, 1.5, 8.0), truth=False, rv_wall_mm=0.0)
    labels = phantom.labels.copy()
    assert not (labels == 4).any()
    surf = surface_mesh(labels, phantom.affine, rv_wall_mm=3.0)
    assert any("geometric RV free wall" in n for n in surf.notes)
    assert surf.quality["passed"], surf.quality["failed"]
    area = surf.quality["tag_area_mm2"]
    assert area["rv"] > 0.3 * area["lv"]  # the RV cavity is closed and tagged


def test_smoothing_keeps_volume():
    phantom = make_phantom((1.25, 1.25, 1.25), truth=False)
    rough = surface_mesh(phantom.labels, phantom.affine, smooth=False)
    smooth = surface_mesh(phantom.labels, phantom.affine, smooth=True)
    v0 = signed_volume(rough.vertices, rough.faces)
    v1 = signed_volume(smooth.vertices, smooth.faces)
    assert abs(v1 - v0) / v0 < 1e-3
    assert not np.allclose(rough.vertices, smooth.vertices)


def test_bad_inputs_raise_clear_errors():
    phantom = make_phantom((1.25, 1.25, 1.25), truth=False)
    with pytest.raises(InputError, match="0-4"):
        surface_mesh(phantom.labels.astype(int) * 3, phantom.affine)
    with pytest.raises(InputError, match="no myocardium"):
        surface_mesh(np.where(phantom.labels == 1, 1, 0), phantom.affine)
    with pytest.raises(GeometryError, match="affine"):
        surface_mesh(phantom.labels, np.zeros((4, 4)))
    with pytest.raises(GeometryError, match="apex side"):
        surface_mesh(phantom.labels, phantom.affine,
                     base_plane=(phantom.base_point - 200 * phantom.base_normal,
                                 phantom.base_normal))


# The gate must catch what it claims to catch.

def _sphere(centre=(0.0, 0.0, 0.0), radius=10.0):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return np.asarray(m.vertices) + centre, np.asarray(m.faces, np.int64)


def test_gate_passes_a_sphere():
    v, f = _sphere()
    q = quality_report(v, f, voxel_volume_mm3=4 / 3 * np.pi * 1000)
    assert q["passed"], q["failed"]


def test_gate_catches_holes_flips_handles_and_intersections():
    v, f = _sphere()
    assert "watertight" in quality_report(v, f[1:])["failed"]
    flipped = f.copy()
    flipped[0] = flipped[0, ::-1]
    assert "consistent_winding" in quality_report(v, flipped)["failed"]
    assert "consistent_winding" in quality_report(v, f[:, ::-1])["failed"]  # inside out
    v2, f2 = _sphere((30.0, 0, 0))
    two = quality_report(np.vstack([v, v2]), np.vstack([f, f2 + len(v)]))
    assert "euler_characteristic" in two["failed"]
    v3, f3 = _sphere((11.3, 0.7, 0.4))  # overlaps the first (not mirror-symmetric)
    crossing = quality_report(np.vstack([v, v3]), np.vstack([f, f3 + len(v)]))
    assert crossing["self_intersections"]["value"] > 0
    import trimesh

    torus = trimesh.creation.torus(major_radius=10, minor_radius=3)
    q = quality_report(np.asarray(torus.vertices), np.asarray(torus.faces, np.int64))
    assert q["euler_characteristic"]["genus"] == 1 and not q["passed"]
    q = quality_report(v * [1, 1, 1], f, voxel_volume_mm3=4 / 3 * np.pi * 1000 * 1.1)
    assert "volume" in q["failed"]


def _brute_force_crossings(v, f):
    """The reference: every face pair, no broad phase, no shortcut. Faces sharing an
    edge cross when folded flat; otherwise an edge of one crosses the other triangle,
    edges through a shared vertex excepted."""
    from bvmesh.mesh.quality import _segment_hits

    p = v[f]
    normals = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    hits = 0
    for i in range(len(f) - 1):
        j = np.arange(i + 1, len(f))
        in_j = (f[i][None, :, None] == f[j][:, None, :]).any(axis=2)  # (J, 3): corner of i in j
        in_i = (f[j][:, :, None] == f[i][None, None, :]).any(axis=2)  # (J, 3): corner of j in i
        n_shared = in_j.sum(axis=1)
        a, b = np.broadcast_to(p[i], (len(j), 3, 3)), p[j]
        crossed = np.zeros(len(j), bool)
        for k in range(3):
            k1 = (k + 1) % 3
            crossed |= _segment_hits(a[:, k], a[:, k1], b[:, 0], b[:, 1], b[:, 2]) \
                & ~in_j[:, k] & ~in_j[:, k1]
            crossed |= _segment_hits(b[:, k], b[:, k1], a[:, 0], a[:, 1], a[:, 2]) \
                & ~in_i[:, k] & ~in_i[:, k1]
        folded = (normals[j] @ normals[i]) < -0.999
        hits += int(np.where(n_shared == 2, folded, crossed & (n_shared < 2)).sum())
    return hits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_intersection_count_matches_brute_force_on_crumpled_spheres(seed):
    """The broad phase and the flat-ring shortcut must not lose a crossing."""
    from bvmesh.mesh.quality import self_intersections

    v, f = _sphere(radius=10.0)
    rng = np.random.default_rng(seed)
    v = v.copy()
    pushed = rng.choice(len(v), 25, replace=False)
    v[pushed] *= rng.uniform(0.6, 1.3, (25, 1))  # spikes and dents: rings that fold
    v += rng.normal(0, 0.4, v.shape)
    want = _brute_force_crossings(v, f)
    assert want > 0
    assert self_intersections(v, f) == want


def _basal_rv(base_at_start: bool, fill: str):
    """The 8 mm phantom without RV myocardium (as ACDC) whose basal slice has no RV pool:
    there it is background ("none"), background but one stray pool voxel ("stray"), or
    LV myocardium ("lid")."""
    phantom = make_phantom((1.5, 1.5, 8.0), truth=False, rv_wall_mm=0.0,
                           base_at_start=base_at_start)
    labels = phantom.labels.copy()
    heart = np.flatnonzero(labels.any(axis=(0, 1)))
    top = labels[:, :, heart[0] if base_at_start else heart[-1]]
    rv = np.argwhere(top == 3)
    top[top == 3] = 2 if fill == "lid" else 0
    if fill == "stray":
        top[tuple(rv[len(rv) // 2])] = 3
    return phantom, labels


@pytest.mark.parametrize("base_at_start,fill", [(False, "none"), (True, "none"),
                                                (False, "stray"), (True, "lid")])
def test_a_pool_that_stops_below_the_base_is_opened_not_filled(base_at_start, fill):
    """ACDC's basal slice often has no RV: the RV pool must still open at the base,
    not be sealed by its wall (or a lid of myocardium) and filled with myocardium."""
    phantom, labels = _basal_rv(base_at_start, fill)
    plane = (phantom.base_point, phantom.base_normal)
    surf = surface_mesh(labels, phantom.affine, base_plane=plane)
    assert surf.quality["passed"], surf.quality["failed"]
    note = [n for n in surf.notes if "RV blood pool ended" in n]
    assert note and "extended to it" in note[0]
    assert ("myocardium that closed it" in note[0]) == (fill == "lid")
    assert "enclosed cavities 0.00 ml, enclosed pool fragments 0.00 ml" in " ".join(surf.notes)
    assert not any(n.startswith("WARNING") for n in surf.notes)
    full = surface_mesh(phantom.labels, phantom.affine, base_plane=plane)
    area, full_area = surf.quality["tag_area_mm2"], full.quality["tag_area_mm2"]
    assert area["rv"] > 0.8 * full_area["rv"]  # the RV cavity is kept and tagged
    assert not any("blood pool ended" in n for n in full.notes)


def test_smoothing_that_folds_the_surface_is_retried_with_fewer_passes(monkeypatch):
    """Smoothing can fold a thin wall; the mesh is then smoothed less, not failed."""
    import bvmesh.mesh.surface as surface

    phantom = make_phantom((1.25, 1.25, 1.25), truth=False)
    real_smooth = surface.smooth

    def folding_smooth(verts, faces, *, iterations, **kw):
        out = real_smooth(verts, faces, iterations=iterations, **kw)
        if iterations == 10:  # push one vertex straight through the far wall
            out = out.copy()
            out[0] = out[0] + 3 * (out.mean(axis=0) - out[0])
        return out

    monkeypatch.setattr(surface, "smooth", folding_smooth)
    surf = surface_mesh(phantom.labels, phantom.affine)
    assert surf.quality["passed"], surf.quality["failed"]
    assert any("smoothing with 10 Taubin passes failed self_intersections" in n for n in surf.notes)


def test_a_remeshed_surface_that_fails_the_gate_gives_way_to_shorter_edges(monkeypatch):
    """The fast path must not let a failed remesh through: when the edge asked for (2 and 3
    passes) and a 10 % shorter one all fail, the careful ladder takes over and gates what it
    returns."""
    pytest.importorskip("gpytoolbox")
    import bvmesh.mesh.remesh as remesh

    phantom = make_phantom((1.25, 1.25, 1.25), truth=False)
    real_remesh = remesh.remesh

    def folding_remesh(verts, faces, base_faces, edge_mm, iterations=2):
        out, new_faces = real_remesh(verts, faces, base_faces, edge_mm, iterations)
        if edge_mm >= 1.35:  # push one vertex straight through the far wall
            out = out.copy()
            out[-1] = out[-1] + 3 * (out.mean(axis=0) - out[-1])
        return out, new_faces

    monkeypatch.setattr(remesh, "remesh", folding_remesh)
    surf = surface_mesh(phantom.labels, phantom.affine, edge_mm=1.5)
    assert surf.quality["passed"], surf.quality["failed"]
    assert any("remeshed to 1.1 mm edges (1.5 mm failed the gate)" in n for n in surf.notes), \
        surf.notes


@pytest.mark.parametrize("fault", ["min_triangle_angle_deg", "self_intersections"])
def test_a_remesh_that_fails_the_gate_is_tried_again_before_the_ladder(monkeypatch, fault):
    """A sliver or a crossing where the triangles fell does not send the surface down the
    ladder to a fraction of its edge: the edge asked for is remeshed again with one more
    pass (then 10 % shorter)."""
    pytest.importorskip("gpytoolbox")
    import bvmesh.mesh.build as build
    import bvmesh.mesh.remesh as remesh

    phantom = make_phantom((1.25, 1.25, 1.25), truth=False)
    real_gate, real_remesh, calls, made = build.quality_report, remesh.remesh, [], []

    def fails_first(verts, faces, tags, **kw):
        report = real_gate(verts, faces, tags, **kw)
        calls.append(len(faces))
        return {**report, "passed": False, "failed": [fault]} if len(calls) == 1 else report

    def counted(verts, faces, base_faces, edge_mm, iterations=2):
        made.append((edge_mm, iterations))
        return real_remesh(verts, faces, base_faces, edge_mm, iterations)

    monkeypatch.setattr(build, "quality_report", fails_first)
    monkeypatch.setattr(remesh, "remesh", counted)
    surf = surface_mesh(phantom.labels, phantom.affine, edge_mm=1.5)
    assert surf.quality["passed"], surf.quality["failed"]
    assert made == [(1.5, 2), (1.5, 3)]  # the edge asked for kept; no dense gate, no ladder
    assert any("remeshed to 1.5 mm edges (3 passes, after 1 remesh that failed the gate)"
               in n for n in surf.notes), surf.notes
    assert len(calls) == 2

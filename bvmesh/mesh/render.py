"""A PNG picture of a tagged surface: for QC and the docs.

Each view is drawn by a z-buffer in numpy (orthographic, faces shaded by their normals):
every face is sampled on a barycentric lattice finer than a pixel and the sample nearest
the viewer wins each pixel; bvmesh.canvas places the three images, the title and the
legend. Drawing 70 000 faces as 3D polygons with matplotlib took seconds, and painted
overlapping walls in the wrong order where its per-face depth sort failed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .tags import BASE, EPI, LV, RV, TAG_NAMES

#: Tag colours (colour-blind safe, Okabe-Ito).
COLOURS = {BASE: "#E69F00", RV: "#0072B2", LV: "#D55E00", EPI: "#BBBBBB"}
#: Pixels across one view; the heart's largest extent fills 90 % of it. Pixels of the
#: band above the views (the title) and below them (the legend).
VIEW_PX, TITLE_PX, LEGEND_PX = 440, 34, 40
#: Light direction in the view's frame (x right, y up, z toward the viewer).
LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])


def render_png(mesh, path: str | os.PathLike, *, title: str | None = None,
               views: tuple[tuple[float, float], ...] = ((20, -60), (20, 120), (80, -90)),
               clip_epi: bool = True) -> Path:
    """Render the surface from ``views`` (elevation, azimuth in degrees, around the long
    axis: the mesh is rotated so its base normal points up). The last view looks from
    the base; with ``clip_epi`` the first two show the epicardium cut open at mid-plane
    so the endocardial tags inside are visible."""
    from ..canvas import Page
    from ..canvas import rgb as to_rgb

    tri, tags = _heart_frame(mesh)
    values, which = np.unique(tags, return_inverse=True)
    rgb = np.array([to_rgb(COLOURS.get(int(t), "#888888")) for t in values])[which]
    lim = np.abs(tri).max()
    top = TITLE_PX if title else 0
    page = Page(VIEW_PX * len(views), top + VIEW_PX + LEGEND_PX)
    for k, (elev, azim) in enumerate(views):
        keep = np.ones(len(tri), bool)
        if clip_epi and k < len(views) - 1:
            # Cut away the half facing the viewer, to show the cavities.
            toward = np.array([np.cos(np.radians(azim)), np.sin(np.radians(azim)), 0])
            keep = tri.mean(axis=1) @ toward < 0
        page.paste(draw(tri[keep], rgb[keep], _view_rotation(elev, azim), lim), k * VIEW_PX, top)
    if title:
        page.text(page.image.width / 2, TITLE_PX / 2, title, size=15, anchor="mm")
    page.legend([(COLOURS[t], f"{TAG_NAMES[t]} ({t})") for t in (BASE, RV, LV, EPI)],
                top + VIEW_PX + LEGEND_PX / 2, size=14)
    return page.save(path)


def _heart_frame(mesh) -> tuple[np.ndarray, np.ndarray]:
    """(F, 3, 3) face corners in the heart's frame (z = base normal, x toward the RV's
    centroid, origin at the vertices' mean) and the face tags; surfaces or tetra meshes."""
    is_tetra = hasattr(mesh, "tetra")
    verts = np.asarray(mesh.points if is_tetra else mesh.vertices, float)
    faces = np.asarray(mesh.triangles if is_tetra else mesh.faces)
    tags = np.asarray(mesh.triangle_tags if is_tetra else mesh.face_tags)
    z = np.asarray(mesh.base_plane[1]) if mesh.base_plane is not None else np.array([0, 0, 1.0])
    centre = verts.mean(axis=0)
    rv = verts[faces[tags == RV]].reshape(-1, 3).mean(axis=0) if (tags == RV).any() else \
        centre + np.cross(z, [1, 0, 0])
    x = rv - centre
    x -= (x @ z) * z
    x /= np.linalg.norm(x) if np.linalg.norm(x) > 0 else 1
    frame = np.stack([x, np.cross(z, x), z])
    return ((verts - centre) @ frame.T)[faces], tags


def _view_rotation(elev: float, azim: float) -> np.ndarray:
    """Rows: screen right, screen up, toward the viewer, for a camera at ``elev``/``azim``
    degrees (matplotlib's convention: azimuth about z, elevation above the xy plane)."""
    e, a = np.radians(elev), np.radians(azim)
    toward = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    right = np.array([-np.sin(a), np.cos(a), 0.0])
    return np.stack([right, np.cross(toward, right), toward])


def draw(tri: np.ndarray, rgb: np.ndarray, rotation: np.ndarray, lim: float,
         size: int = VIEW_PX) -> np.ndarray:
    """(size, size, 3) image of faces ``tri`` (F, 3, 3) coloured ``rgb`` (F, 3), seen
    through ``rotation`` (rows: right, up, toward the viewer), ``lim`` mm from the centre
    to the image's edge at 90 %. White where no face is."""
    image = np.ones((size, size, 3))
    if not len(tri):
        return image
    scale = 0.45 * size / lim
    screen = tri @ rotation.T  # (F, 3, 3): x right, y up, z toward the viewer
    normal = np.cross(screen[:, 1] - screen[:, 0], screen[:, 2] - screen[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    colour = np.clip(rgb * (0.45 + 0.55 * np.abs(normal @ LIGHT))[:, None], 0, 1)
    px = screen[..., :2] * scale + size / 2
    corners = np.concatenate([px, screen[..., 2:]], axis=-1)  # pixel column, row up, depth
    longest = np.linalg.norm(px - np.roll(px, 1, axis=1), axis=2).max(axis=1)
    steps = np.clip(np.ceil(longest), 1, 64).astype(int)  # lattice steps under a pixel
    pixel, depth, which = [], [], []
    for n in np.unique(steps):
        sel = np.flatnonzero(steps == n)
        pts = _lattice(int(n)) @ corners[sel]  # (F, M, 3): every lattice point of each face
        col, row = pts[..., 0].astype(int), (size - 1 - pts[..., 1]).astype(int)
        inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        pixel.append((row * size + col)[inside])
        depth.append(pts[..., 2][inside])
        which.append(np.broadcast_to(sel[:, None], inside.shape)[inside])
    pixel, depth, which = map(np.concatenate, (pixel, depth, which))
    nearest = np.full(size * size, -np.inf)
    np.maximum.at(nearest, pixel, depth)
    hit = depth == nearest[pixel]  # the sample nearest the viewer in its pixel
    image.reshape(-1, 3)[pixel[hit]] = colour[which[hit]]
    return image


def _lattice(n: int) -> np.ndarray:
    """Barycentric weights of the (n + 1)(n + 2) / 2 points of a triangle's n-step lattice."""
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    i, j = i[keep], j[keep]
    return np.stack([n - i - j, i, j], axis=1) / n

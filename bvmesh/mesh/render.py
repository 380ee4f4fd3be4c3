"""A PNG picture of a tagged surface (matplotlib, offscreen): for QC and the docs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_write
from .tags import BASE, EPI, LV, RV, TAG_NAMES

#: Tag colours (colour-blind safe, Okabe-Ito).
COLOURS = {BASE: "#E69F00", RV: "#0072B2", LV: "#D55E00", EPI: "#BBBBBB"}


def render_png(mesh, path: str | os.PathLike, *, title: str | None = None,
               views: tuple[tuple[float, float], ...] = ((20, -60), (20, 120), (80, -90)),
               clip_epi: bool = True, dpi: int = 110) -> Path:
    """Render the surface from ``views`` (elevation, azimuth in degrees, around the long
    axis: the mesh is rotated so its base normal points up). The last view looks from
    the base; with ``clip_epi`` the first two show the epicardium cut open at mid-plane
    so the endocardial tags inside are visible. Faces shaded by their normals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    is_tetra = hasattr(mesh, "tetra")
    verts = np.asarray(mesh.points if is_tetra else mesh.vertices, float)
    faces = np.asarray(mesh.triangles if is_tetra else mesh.faces)
    tags = np.asarray(mesh.triangle_tags if is_tetra else mesh.face_tags)
    # Heart frame: z = base normal, x = toward the RV (centroid of RV faces).
    z = np.asarray(mesh.base_plane[1]) if mesh.base_plane is not None else np.array([0, 0, 1.0])
    centre = verts.mean(axis=0)
    rv = verts[faces[tags == RV]].reshape(-1, 3).mean(axis=0) if (tags == RV).any() else \
        centre + np.cross(z, [1, 0, 0])
    x = rv - centre
    x -= (x @ z) * z
    x /= np.linalg.norm(x) if np.linalg.norm(x) > 0 else 1
    frame = np.stack([x, np.cross(z, x), z])
    v = (verts - centre) @ frame.T
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    light = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    shade = 0.45 + 0.55 * np.abs(n @ light)
    base_rgb = np.array([matplotlib.colors.to_rgb(COLOURS.get(int(t), "#888888")) for t in tags])
    rgb = np.clip(base_rgb * shade[:, None], 0, 1)
    fig = plt.figure(figsize=(4.2 * len(views), 4.6))
    lim = np.abs(v).max()
    for k, (elev, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), k + 1, projection="3d")
        keep = np.ones(len(faces), bool)
        if clip_epi and k < len(views) - 1:
            # Cut away the half facing the viewer, to show the cavities.
            view = np.array([np.cos(np.radians(azim)), np.sin(np.radians(azim)), 0])
            keep = tri.mean(axis=1) @ view < 0
        ax.add_collection3d(Poly3DCollection(tri[keep], facecolors=rgb[keep], linewidths=0))
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_zlim(-lim, lim)
        ax.view_init(elev=elev, azim=azim)
        ax.set_box_aspect((1, 1, 1))
        ax.set_axis_off()
    handles = [Patch(color=COLOURS[t], label=f"{TAG_NAMES[t]} ({t})") for t in (BASE, RV, LV, EPI)]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0, right=1, top=0.93, bottom=0.08, wspace=0)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
    plt.close(fig)
    return path

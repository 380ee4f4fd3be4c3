"""The mesh stage's two results: a tagged closed surface and a tagged tetrahedral mesh."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import surface


@dataclass(frozen=True, eq=False)
class SurfaceMesh:
    """A closed triangle surface of the biventricular myocardium.

    vertices: (N, 3) float64, world RAS mm. faces: (M, 3) int64, wound outward.
    face_tags: (M,) ldrb markers (base 10, rv 20, lv 30, epi 40). quality: the gate
    report (JSON-serialisable, ``passed`` plus one item per check). notes: what was
    done to the labels on the way (upsampling, repairs with their volumes, ...).
    base_plane: (point mm, unit normal from apex toward base) used for the cut.
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_tags: np.ndarray
    quality: dict
    notes: tuple[str, ...] = ()
    base_plane: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def volume_ml(self) -> float:
        """The enclosed myocardium volume (ml)."""
        return surface.signed_volume(self.vertices, self.faces) / 1000


@dataclass(frozen=True, eq=False)
class TetraMesh:
    """A tetrahedral mesh of the myocardium with its tagged boundary triangles.

    points (N, 3) world mm; tetra (K, 4) positively oriented; triangles (M, 3) the
    boundary, wound outward; triangle_tags (M,) ldrb markers; quality as for surfaces
    plus element checks; notes.
    """

    points: np.ndarray
    tetra: np.ndarray
    triangles: np.ndarray
    triangle_tags: np.ndarray
    quality: dict
    notes: tuple[str, ...] = ()
    base_plane: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

"""The mesh stage: label map -> tagged, closed biventricular myocardium surface (world mm),
optionally a tetrahedral volume mesh, and writers for simulation formats.

    from bvmesh.mesh import surface_mesh, write_mesh
    surf = surface_mesh(labels, affine)          # labels 0-4 (bvmesh.labels), affine voxel -> RAS mm
    write_mesh(surf, "mesh.vtp")                 # face tags as cell data "tag"

Modules: build (surface_mesh and tetra_mesh: the stage itself), prepare (crop, base
plane, thick-slice upsampling), repair (topology, RV wall), surface (field, marching
cubes, smoothing), slabs and apex (base and apex of a segmentation's mesh), remesh
(--edge-mm), tags, quality (the gate), export (writers), tetra (gmsh, optional),
labelmap (`bvmesh mesh` on a file). This module only re-exports.
"""

from __future__ import annotations

from .build import RV_WALL_MM, surface_mesh, tetra_mesh
from .export import write_mesh
from .meshes import SurfaceMesh, TetraMesh
from .quality import quality_report
from .tags import BASE, EPI, LV, MARKERS, RV, TAG_NAMES

__all__ = ["SurfaceMesh", "TetraMesh", "surface_mesh", "tetra_mesh", "write_mesh",
           "quality_report", "BASE", "RV", "LV", "EPI", "MARKERS", "TAG_NAMES", "RV_WALL_MM"]

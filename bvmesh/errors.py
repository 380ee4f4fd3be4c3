"""Exceptions raised by the library. The CLI turns them into one line and an exit code.

Every message names the file (or value) at fault and what the user can do about it.
"""

from __future__ import annotations


class BvmeshError(Exception):
    """Base class of every error bvmesh raises on purpose."""

    exit_code = 1


class InputError(BvmeshError):
    """An input file is missing, unreadable or not a usable cardiac volume."""


class LabelMapInput(InputError):
    """An input given as an image is a label map (a handful of integer values)."""


class GeometryError(BvmeshError):
    """Slice axis, base slice, ROI or affine are inconsistent with the image."""


class WeightsError(BvmeshError):
    """A weights file is missing, corrupt, foreign or fails its checksum."""


class OutputError(BvmeshError):
    """An output location cannot be written."""


class Interrupted(BvmeshError):
    """A run stopped by Ctrl-C or SIGTERM, after writing what it had finished."""

    exit_code = 130


class MeshQualityError(BvmeshError):
    """A mesh was written but failed the quality gate (see the report)."""

    exit_code = 3

"""Reading and writing images, keeping world geometry exact.

Every image becomes a :class:`Volume`: a 3D float32 array indexed (i, j, k) and the
affine that maps those indices to world millimetres in RAS+ (NIfTI's convention).
Files read through SimpleITK (LPS+) are converted here and nowhere else. Outputs are
written with the input's own NIfTI header when there is one, so they overlay the
input in every viewer exactly as the input itself does.

Longer than the other modules on purpose: every reader (NIfTI, SimpleITK formats, DICOM
series, multi-phase cines) must end in the same Volume through the same LPS -> RAS rule,
and split by format that rule would live in several files.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, OutputError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
#: LPS (ITK, DICOM) <-> RAS (NIfTI) flips the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Relative disagreement between sform column norms and pixdim that we treat as a broken sform.
SPACING_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Volume:
    """A 3D image on a voxel grid with its voxel -> world (RAS mm) affine."""

    data: np.ndarray
    affine: np.ndarray
    source: str = "<array>"
    header: object | None = field(default=None, repr=False, compare=False)
    notes: tuple[str, ...] = ()
    frame: int | None = None

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each voxel axis (column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]


def is_image_path(path: Path) -> bool:
    name = path.name.lower()
    return path.is_dir() or name.endswith(NIFTI_SUFFIXES + ITK_SUFFIXES + (".dcm",))


def case_name(path: str | os.PathLike) -> str:
    """`case.nii.gz` -> `case`; a DICOM folder -> its folder name."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES + ITK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


#: An "image" with at most this many distinct integer values is a label map (bvmesh's own
#: have 5, ACDC's 4, a binary mask 2; an MRI volume has hundreds).
LABEL_MAP_VALUES = 8


def label_map_values(data: np.ndarray) -> list[int] | None:
    """The values of ``data`` if it looks like a label map (a few integers), else None."""
    flat = np.asarray(data).ravel()
    sample = flat[:: max(1, flat.size // 200_000)]
    if len(np.unique(sample)) > LABEL_MAP_VALUES:
        return None
    values = np.unique(flat)
    if len(values) > LABEL_MAP_VALUES or not np.allclose(values, np.round(values)):
        return None
    return [int(v) for v in values]


def load(path: str | os.PathLike, *, frame: int | None = None) -> Volume:
    """Read a NIfTI, MetaImage, NRRD file or a DICOM series folder as a 3D :class:`Volume`.

    A 4D file (or a multi-phase DICOM series) yields one frame (``frame``, default 0,
    noted in ``Volume.notes``); :func:`load_cine` reads every frame.
    Raises :class:`InputError` for anything that is not a usable 3D image.
    """
    path = Path(path)
    return _volume(path, *_read(path)[:4], frame)


def read(path: str | os.PathLike, *, frame: int | None = None) -> Volume | Cine:
    """:func:`load_cine`'s :class:`Cine` when the input has several frames and no ``frame``
    is asked for, else :func:`load`'s :class:`Volume`; the files are read once."""
    path = Path(path)
    data, affine, header, notes, times = _read(path)
    if frame is None and data.ndim >= 4 and int(np.prod(data.shape[3:])) > 1:
        return _cine(path, data, affine, header, notes, times)
    return _volume(path, data, affine, header, notes, frame)


def _volume(path: Path, data, affine, header, notes, frame: int | None) -> Volume:
    data, chosen, notes = _pick_frame(path, data, frame, notes)
    _validate(path, data)
    return Volume(np.ascontiguousarray(data, np.float32), affine, str(path),
                  _frame_header(header, chosen), tuple(notes), chosen)


@dataclass(frozen=True)
class Cine:
    """A 4D cine: frames (i, j, k, t) on one 3D grid, its header and trigger times."""

    data: np.ndarray  # float32 (i, j, k, t)
    affine: np.ndarray
    source: str
    header: object | None = field(default=None, repr=False, compare=False)  # the 4D header
    notes: tuple[str, ...] = ()
    times_ms: tuple[float, ...] | None = None  # trigger time of each frame, when known

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[3])

    def frame(self, t: int) -> Volume:
        """Frame ``t`` as a 3D volume on the cine's grid."""
        return Volume(np.ascontiguousarray(self.data[..., t]), self.affine, self.source,
                      _frame_header(self.header, t), self.notes, t)

    def reference(self) -> Volume:
        """A volume whose header is the 4D one, for writing 4D outputs with :func:`save_like`."""
        return Volume(self.data[..., 0], self.affine, self.source, self.header, self.notes)


def load_cine(path: str | os.PathLike) -> Cine:
    """Read a 4D NIfTI (or MetaImage, NRRD) or a multi-phase DICOM series folder.

    Raises :class:`InputError` when the file is not 4D or has fewer than 2 frames.
    """
    path = Path(path)
    return _cine(path, *_read(path))


def _cine(path: Path, data, affine, header, notes, times) -> Cine:
    data = data.reshape(*data.shape[:3], -1) if data.ndim > 4 else data  # (x, y, z, 1, t)
    if data.ndim != 4 or data.shape[3] < 2:
        raise InputError(f"{path}: is not a cine (shape {data.shape}); a cine is 4D with at "
                         "least 2 frames")
    _validate(path, data[..., 0])
    if times is None and header is not None:
        times = _nifti_times(header, data.shape[3])
    notes = [*notes, f"cine with {data.shape[3]} frames"
             + (f", trigger times {times[0]:g} to {times[-1]:g} ms" if times else
                ", trigger times unknown")]
    return Cine(np.ascontiguousarray(data, np.float32), affine, str(path), header, tuple(notes),
                times)


def frame_count(path: str | os.PathLike) -> int:
    """Frames in an image file or DICOM folder (1 for a 3D image), read from headers only."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        try:
            shape = nib.load(str(path)).shape
        except Exception as exc:
            raise InputError(f"{path}: cannot read as NIfTI ({exc}); is the file complete?") from exc
        return int(np.prod(shape[3:])) if len(shape) > 3 else 1
    if path.is_dir():
        phases = _dicom_phases(path)
        return len(phases) if phases else 1
    if name.endswith(ITK_SUFFIXES) and path.exists():
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except Exception:
            return 1  # load() gives the clear error
        size = reader.GetSize()
        return int(size[3]) if len(size) > 3 else 1
    return 1


def _read(path: Path):
    """(data 3D or 4D, affine, header, notes, trigger times ms or None) of any input."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return (*_read_nifti(path), None)
    if path.is_dir():
        phases = _dicom_phases(path)
        if phases:
            return _read_dicom_cine(path, phases)
    if path.is_dir() or name.endswith(ITK_SUFFIXES + (".dcm",)):
        return (*_read_itk(path), None)
    raise InputError(f"{path}: unknown image format; use .nii/.nii.gz, .mha/.mhd, "
                     ".nrrd or a DICOM series folder")


def _frame_header(header, t: int | None):
    """A 3D header for one frame of a 4D NIfTI header (None stays None)."""
    if header is None or t is None:
        return header
    out = header.copy()
    out.set_data_shape(tuple(out.get_data_shape()[:3]))
    return out


def _nifti_times(header, n: int) -> tuple[float, ...] | None:
    """Frame times from pixdim[4] when the header says its time unit (else unknown)."""
    unit = header.get_xyzt_units()[1]
    scale = {"sec": 1000.0, "msec": 1.0, "usec": 0.001}.get(unit)
    step = float(header["pixdim"][4])
    if scale is None or step <= 0:
        return None
    start = float(header["toffset"]) * scale
    return tuple(round(start + t * step * scale, 3) for t in range(n))


def _read_nifti(path: Path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for truncated or foreign files
        raise InputError(f"{path}: cannot read as NIfTI ({exc}); is the file complete?") from exc
    header = img.header.copy()
    affine, notes = nifti_affine(header)
    return data, affine, header, notes


def nifti_affine(header) -> tuple[np.ndarray, list[str]]:
    """The voxel -> RAS affine a NIfTI header really means, and why.

    Prefers the sform, then the qform, as nibabel does, except when the chosen matrix's
    column norms disagree with pixdim (ACDC: sform_code 2 with unit scales while pixdim
    holds 1.5625 x 1.5625 x 10 mm). There the matrix keeps its direction and origin and
    takes pixdim's spacing, as ITK does.
    """
    notes: list[str] = []
    sform, s_code = header.get_sform(coded=True)
    qform, q_code = header.get_qform(coded=True)
    if sform is not None and s_code > 0:
        affine, used = np.array(sform, float), f"sform (code {int(s_code)})"
    elif qform is not None and q_code > 0:
        affine, used = np.array(qform, float), f"qform (code {int(q_code)})"
    else:
        affine, used = np.array(header.get_base_affine(), float), "pixdim only (no sform/qform)"
    # A 2D file has only two zooms; pad so that it reaches the clear "is 2D" error below.
    pixdim = np.array((tuple(header.get_zooms()) + (1.0, 1.0))[:3], float)
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.all(pixdim > 0) and np.any(np.abs(norms - pixdim) > SPACING_TOLERANCE * pixdim):
        affine[:3, :3] = affine[:3, :3] / norms * pixdim
        notes.append(f"geometry: {used} scales {np.round(norms, 4).tolist()} disagree with "
                     f"pixdim {np.round(pixdim, 4).tolist()}; used the {used} directions and "
                     "origin with pixdim spacing (as ITK does)")
    else:
        notes.append(f"geometry: {used}, spacing {np.round(pixdim, 4).tolist()} mm")
    return affine, notes


def _read_itk(path: Path, files: list[str] | None = None):
    import SimpleITK as sitk

    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            files = files or reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputError(f"{path}: folder holds no DICOM series")
            reader.SetFileNames(files)
            # ITK prints a warning to stderr for slice gaps of a micrometre (rounded
            # positions in real series); the geometry is taken from the files either way.
            shown = sitk.ProcessObject.GetGlobalWarningDisplay()
            sitk.ProcessObject.SetGlobalWarningDisplay(False)
            try:
                image = reader.Execute()
            finally:
                sitk.ProcessObject.SetGlobalWarningDisplay(shown)
        else:
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: cannot read image ({str(exc).strip().splitlines()[-1]})") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per "
                         "voxel; bvmesh needs a scalar (grey-level) image")
    # ITK's array is indexed [k, j, i] (or [t, k, j, i]); bvmesh indexes (i, j, k[, t]).
    data = sitk.GetArrayFromImage(image).astype(np.float32)
    data = np.transpose(data, tuple(range(data.ndim))[::-1])
    dim = image.GetDimension()
    direction = np.array(image.GetDirection(), float).reshape(dim, dim)[:3, :3]
    spacing = np.array(image.GetSpacing(), float)[:3]
    origin = np.array(image.GetOrigin(), float)[:3]
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = origin
    notes = [f"geometry: ITK image (LPS) converted to RAS, spacing {np.round(spacing, 4).tolist()} mm"]
    return data, LPS_TO_RAS @ lps, None, notes


#: DICOM tags (ITK's names) that split a multi-phase series into frames.
TRIGGER_TIME, INSTANCE_NUMBER = "0018|1060", "0020|0013"
IMAGE_POSITION, IMAGE_ORIENTATION = "0020|0032", "0020|0037"


def _dicom_phases(folder: Path) -> list[list[str]] | None:
    """The files of each phase of a multi-phase DICOM series, or None for a plain series.

    A cine series holds every slice position once per phase: grouped by position, each
    position's files ordered by trigger time (then instance number) give the phases.
    """
    import SimpleITK as sitk

    try:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    except Exception:
        return None
    if len(files) < 4:
        return None
    reader, by_position, normal = sitk.ImageFileReader(), {}, None
    for f in files:
        reader.SetFileName(f)
        try:
            reader.ReadImageInformation()
        except Exception:
            return None
        tag = lambda k: reader.GetMetaData(k).strip() if reader.HasMetaDataKey(k) else ""  # noqa: E731
        if not tag(IMAGE_POSITION) or not tag(IMAGE_ORIENTATION):
            return None
        position = tuple(round(float(v), 2) for v in tag(IMAGE_POSITION).split("\\"))
        if normal is None:
            row_col = np.array([float(v) for v in tag(IMAGE_ORIENTATION).split("\\")])
            normal = np.cross(row_col[:3], row_col[3:])
        key = (_number(tag(TRIGGER_TIME)), _number(tag(INSTANCE_NUMBER)))
        by_position.setdefault(position, []).append((key, f))
    counts = {len(v) for v in by_position.values()}
    if len(by_position) < 2 or counts == {1}:
        return None
    if len(counts) != 1:
        raise InputError(f"{folder}: a multi-phase DICOM series whose slice positions hold "
                         f"different numbers of phases ({sorted(counts)}); export whole phases")
    # Positions in order along the slice normal, as GDCM orders a plain series.
    positions = sorted(by_position, key=lambda p: float(np.dot(p, normal)))
    ordered = [sorted(by_position[p]) for p in positions]
    return [[row[t][1] for row in ordered] for t in range(counts.pop())]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _read_dicom_cine(folder: Path, phases: list[list[str]]):
    """Each phase read as its own 3D series, stacked along t; trigger times per phase."""
    import SimpleITK as sitk

    frames, times, affine, notes = [], [], None, []
    reader = sitk.ImageFileReader()
    for files in phases:
        data, frame_affine, _, notes = _read_itk(folder, files)
        if affine is not None and not np.allclose(frame_affine, affine, atol=1e-3):
            raise InputError(f"{folder}: the phases of the DICOM cine lie on different grids")
        frames.append(data)
        affine = frame_affine
        reader.SetFileName(files[0])
        reader.ReadImageInformation()
        times.append(_number(reader.GetMetaData(TRIGGER_TIME)) if
                     reader.HasMetaDataKey(TRIGGER_TIME) else float("nan"))
    known = all(np.isfinite(times))
    notes = [*notes, f"multi-phase DICOM series: {len(phases)} phases of {len(phases[0])} slices, "
             f"split by {'trigger time' if known else 'instance number'}"]
    return (np.stack(frames, axis=3), affine, None, notes,
            tuple(round(t, 3) for t in times) if known else None)


def _pick_frame(path: Path, data: np.ndarray, frame: int | None, notes: list[str]):
    data = np.squeeze(data) if data.ndim > 4 else data
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 3:
        if frame not in (None, 0):
            raise InputError(f"{path}: is 3D; --frame {frame} only applies to 4D (cine) files")
        return data, None, notes
    if data.ndim != 4:
        raise InputError(f"{path}: is {data.ndim}D with shape {data.shape}; bvmesh needs a 3D "
                         "short-axis stack (or 4D cine with --frame)")
    n = data.shape[3]
    chosen = 0 if frame is None else frame
    if not 0 <= chosen < n:
        raise InputError(f"{path}: has {n} frames; --frame must be in 0..{n - 1}")
    notes = [*notes, f"4D input with {n} frames: used frame {chosen}"
             + (" (the first; choose another with --frame)" if frame is None else "")]
    return data[..., chosen], chosen, notes


def _validate(path: Path, data: np.ndarray) -> None:
    if min(data.shape) < 1 or sorted(data.shape)[1] < 8:
        raise InputError(f"{path}: shape {data.shape} is not a 3D image stack")
    if min(data.shape) < 2:
        raise InputError(f"{path}: has a single slice (shape {data.shape}); bvmesh needs a "
                         "stack of short-axis slices")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: contains NaN or infinite voxels; fix or mask them first")
    if not np.any(data):
        raise InputError(f"{path}: every voxel is zero; is this the right file?")


def save_like(array: np.ndarray, reference: Volume, path: str | os.PathLike,
              *, dtype=np.uint8) -> Path:
    """Write ``array`` (on ``reference``'s grid) as NIfTI with the reference's header.

    The header (sform, qform, their codes, pixdim) is copied unchanged when the
    reference came from a NIfTI file, so the output overlays the input exactly in any
    viewer; otherwise the reference affine is written as both sform and qform.
    """
    import nibabel as nib

    array = np.asarray(array)
    if array.shape[:3] != reference.shape:
        raise ValueError(f"array shape {array.shape} does not match the grid {reference.shape}")
    if reference.header is not None:
        header = reference.header.copy()
        header.set_data_dtype(dtype)
        img = nib.Nifti1Image(array.astype(dtype), None, header=header)
        img.header.set_slope_inter(1.0, 0.0)
    else:
        img = nib.Nifti1Image(array.astype(dtype), reference.affine)
        img.header.set_qform(reference.affine, code=1)
        img.header.set_sform(reference.affine, code=1)
    return atomic_write(Path(path), lambda tmp: nib.save(img, str(tmp)))


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it into place.

    The temporary name keeps the final suffix so that writers that choose the format by
    extension (nibabel, trimesh, meshio) still do the right thing.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc}); check the folder "
                          "exists and is writable") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

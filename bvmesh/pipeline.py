"""`segment()`: one volume from file to labels, and the per-case output folder.

    file -> io.load -> geometry (slice axis, base) -> locate heart -> preprocess (stack)
         -> propagate -> postprocess -> labels on the input grid (+ isotropic labels for meshing)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__, geometry, io, postprocess, preprocess
from .errors import GeometryError, LabelMapInput
from .geometry import StackGrid
from .labels import CLASS_NAMES, LV_MYO, MYOCARDIUM

log = logging.getLogger(__name__)

#: Myocardial tissue density used for the LV mass (g/ml), the usual CMR value.
MYOCARDIAL_DENSITY = 1.05


@dataclass(frozen=True)
class SegmentResult:
    """Labels on the input grid, isotropic labels on the stack grid, and the run's report."""

    volume: io.Volume
    labels: np.ndarray  # uint8, input grid, bvmesh labels 0-4
    stack_labels: np.ndarray  # uint8, isotropic stack grid (s = 0 at the base)
    grid: StackGrid
    report: dict
    probabilities: np.ndarray | None = field(default=None, repr=False)  # (5, ...) input grid

    @property
    def myocardium(self) -> np.ndarray:
        return np.isin(self.labels, MYOCARDIUM).astype(np.uint8)


def timer():
    """(times, lap): ``lap(name)`` records the seconds since the previous lap."""
    times: dict[str, float] = {}
    last = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        times[name] = round(now - last[0], 4)
        last[0] = now

    return times, lap


@dataclass(frozen=True)
class SegmentOptions:
    """The choices of one segmentation, shared by :func:`segment` and
    :func:`bvmesh.cine.segment_cine`.

    ``base_slice``: 0-based index of the base along the slice axis of the file as stored
    (None: detected, bvmesh.base). ``slice_axis``: the voxel axis through the slices (None:
    the one of largest spacing). ``roi``: the heart centre in voxel indices along the two
    in-plane axes (None: found by the locator network). ``propagation=False`` is the
    paper's ablation (every slice alone); ``fusion`` anchors each propagated mask to the
    initialisation network's reading of its slice (False: the paper's pure propagation;
    docs/method.md says why fusion is the default). ``rv_wall_mm``: the geometric RV free
    wall of a model without that class. ``plausibility``: remove what no heart has
    (bvmesh.plausibility), listed in the report. ``qc_strict``: a quality-control warning
    counts as a failure (bvmesh.checks). ``probabilities``: keep the class probabilities on
    the input grid. ``apex_sign`` (+1 or -1): the apex lies toward increasing or decreasing
    slice index (None: detected).
    """

    base_slice: int | None = None
    slice_axis: int | None = None
    roi: tuple[float, float] | None = None
    propagation: bool = True
    fusion: bool = True
    rv_wall_mm: float = 3.0
    plausibility: bool = True
    qc_strict: bool = False
    probabilities: bool = False
    apex_sign: int | None = None

    def with_fields(self, **fields) -> SegmentOptions:
        """These options with ``fields`` changed (a TypeError names an unknown one)."""
        return dataclasses.replace(self, **fields) if fields else self


def segment(source: str | os.PathLike | io.Volume, options: SegmentOptions | None = None, *,
            frame: int | None = None, weights: str | os.PathLike | None = None, model=None,
            device: str = "auto", cache_dir: str | os.PathLike | None = None,
            offline: bool | None = None, **fields) -> SegmentResult:
    """Segment the LV and RV of one short-axis volume.

    ``options`` (:class:`SegmentOptions`), or any of its fields as keywords
    (``segment(path, base_slice=3)``), which override it. ``model`` (from
    :func:`bvmesh.load_model`) avoids reloading weights in cohorts; otherwise ``weights``
    (registry name, path or URL; None = bundled default) is loaded on ``device``.
    ``frame``: the frame of a 4D input (default 0); :func:`bvmesh.cine.segment_cine`
    segments them all.
    """
    opts = (options or SegmentOptions()).with_fields(**fields)
    times, lap = timer()
    volume = _read(source, frame)
    lap("read")
    model, weights_info = model_and_info(model, weights, device, cache_dir, offline)
    lap("load_model")
    axis, geo = slice_geometry(volume, model, opts)
    lap("locate")
    grid = stack_grid(volume, model, axis, geo)
    stack = preprocess.make_stack(volume.data, grid)
    lap("preprocess")
    from .propagate import segment_stack

    acquired = grid.acquired(axis, volume.shape[axis])
    geo, reading = place_init(geo, model, stack.image, grid, axis, acquired, opts)
    probs = segment_stack(model, stack.image, geo["init_stack"], propagation=opts.propagation,
                          fusion=opts.fusion, acquired=acquired, reading=reading)
    lap("network")
    result = finish(volume, probs, grid, geo, model, opts, report_head(volume, weights_info, model, opts))
    lap("postprocess")
    result.report["timings_s"] = times
    return result


def model_and_info(model, weights, device: str, cache_dir, offline):
    """The given model and its provenance, or the weights ``weights`` loaded on ``device``."""
    if model is None:
        return load_weights(weights, device, cache_dir=cache_dir, offline=offline)
    return model, model.source


def report_head(volume: io.Volume, weights_info: dict, model, opts: SegmentOptions) -> dict:
    """The report's opening fields: what was read and with what it was segmented."""
    return {"bvmesh_version": __version__, "input": volume.source, "shape": list(volume.shape),
            "frame": volume.frame,
            "geometry": {"notes": list(volume.notes), "affine": np.round(volume.affine, 6).tolist(),
                         "spacing_mm": np.round(volume.spacing, 6).tolist()},
            "weights": weights_info, "device": str(next(model.init.parameters()).device),
            "propagation": opts.propagation, "fusion": opts.fusion and opts.propagation,
            "warnings": []}


def stack_grid(volume: io.Volume, model, axis: int, geo: dict) -> StackGrid:
    """The isotropic ROI grid of the model, from the base toward the apex."""
    return geometry.stack_grid(volume.affine, volume.shape, slice_axis=axis,
                               base_slice=geo["base_slice"], apex_sign=geo["apex_sign"],
                               center=geo["roi_center"], size=model.config["size"],
                               spacing_mm=model.config["spacing_mm"])


def finish(volume: io.Volume, probs: np.ndarray, grid: StackGrid, geo: dict, model,
           opts: SegmentOptions, report: dict) -> SegmentResult:
    """From the stack's probabilities to labels on the input grid, measured and checked."""
    stack_labels = postprocess.clean(postprocess.threshold(probs, model.classes), geo["init_stack"])
    if opts.plausibility:
        stack_labels, report["plausibility"] = _plausible(stack_labels, grid, geo)
    if "rv_myo" not in model.classes and opts.rv_wall_mm > 0:
        stack_labels = postprocess.add_rv_wall(stack_labels, grid.spacing_mm, opts.rv_wall_mm)
        report["warnings"].append(
            f"the RV free wall is geometric: a {opts.rv_wall_mm:g} mm shell around the RV blood "
            "pool (the model has no RV-myocardium class)")
    labels = _labels_on_input(stack_labels, grid, volume.shape)
    prob_out = _probabilities_on_input(probs, model.classes, grid, volume.shape) \
        if opts.probabilities else None
    report["slices"] = geo["report"]
    report["measurements"] = measurements(labels, volume.affine)
    report["qc"] = _quality_control(labels, volume, report, opts.qc_strict)
    if not np.isin(labels, MYOCARDIUM).any():
        report["warnings"].append("no myocardium was found; check the ROI and base slice in qc.png")
    return SegmentResult(volume, labels, stack_labels, grid, report, prob_out)


def _read(source: str | os.PathLike | io.Volume, frame: int | None) -> io.Volume:
    """The input volume, refusing a label map handed in as an image."""
    volume = source if isinstance(source, io.Volume) else io.load(source, frame=frame)
    refuse_label_map(volume.data, volume.source)
    return volume


def refuse_label_map(data: np.ndarray, source: str) -> None:
    """Raise :class:`LabelMapInput` when ``data`` holds a label map, not an MRI image."""
    values = io.label_map_values(data)
    if values is not None:
        raise LabelMapInput(f"{source}: holds only the values {values}: a label map, not "
                            "an MRI image; skipped (name label files *_gt to keep them out of a "
                            "cohort, or mesh them with bvmesh mesh)")


def _labels_on_input(stack_labels: np.ndarray, grid: StackGrid, shape) -> np.ndarray:
    """Stack labels on the input grid: each class's one-hot channel resampled, then the largest."""
    return postprocess.from_one_hot(
        preprocess.to_input_grid(postprocess.one_hot(stack_labels)[1:], grid, shape))


def _probabilities_on_input(probs: np.ndarray, classes, grid: StackGrid, shape) -> np.ndarray:
    """The model's class probabilities in bvmesh's label order (5 channels), on the input grid."""
    full = np.zeros((len(CLASS_NAMES) + 1, *probs.shape[1:]), np.float32)
    full[0] = probs[0]
    for i, name in enumerate(classes):
        full[1 + CLASS_NAMES.index(name)] = probs[1 + i]
    out = preprocess.to_input_grid(full, grid, shape)
    out[0] += 1.0 - out.sum(0)
    return out


def _plausible(stack_labels: np.ndarray, grid: StackGrid, geo: dict) -> tuple[np.ndarray, list[dict]]:
    """bvmesh.plausibility's rules on the stack, each removal with the input slices it hit."""
    from .plausibility import enforce

    axis = geo["report"]["slice_axis"]
    labels, removals = enforce(stack_labels, grid.spacing_mm, geo["init_stack"])
    if removals:
        labels = postprocess.clean(labels, geo["init_stack"])  # a cut can leave a piece cut off
    listed = []
    for r in removals:
        item = r.as_dict()
        item["input_slices"] = [int(round(float(grid.input_slice(s, axis))))
                                for s in item["stack_slices"]]
        listed.append(item)
        log.info("plausibility: removed %.2f ml of %s (%s) on input slices %s", r.ml, r.structure,
                 r.rule, item["input_slices"])
    return labels, listed


def apex_sign(slices: dict) -> int:
    """+1 when the apex lies toward increasing slice index, from a report's ``slices`` block."""
    return 1 if slices["apex_direction"].startswith("increasing") else -1


def _quality_control(labels: np.ndarray, volume: io.Volume, report: dict, strict: bool) -> dict:
    from .checks import assess, image_texture, measures, rv_right, slice_order

    geo = report["slices"]
    sign = apex_sign(geo)
    removed = sum(r["ml"] for r in report.get("plausibility", []))
    values = measures(labels, volume.spacing, geo["slice_axis"], geo["base_slice"], sign,
                      report["measurements"], removed)
    detection = geo.get("base_detection", {})
    margin = detection.get("margin")
    values["base_margin"] = margin if margin is not None and np.isfinite(margin) else None
    values["apex_contrast"] = detection.get("apex_contrast")
    values["rv_right"] = rv_right(labels, volume.affine)
    located = np.flatnonzero(np.asarray(geo.get("heart_area_mm2_per_slice", []), float) > 0)
    values["image_texture"] = image_texture(volume.data, labels, geo["slice_axis"], located)
    values["slice_order"] = slice_order(volume.data, labels, geo["slice_axis"])
    return assess(values, strict=strict)


def load_model(weights: str | os.PathLike | None = None, device: str = "auto", *,
               cache_dir: str | os.PathLike | None = None, offline: bool | None = None):
    """The model called ``weights`` (registry name, file path or URL; None: the bundled
    one) on ``device``, its provenance in ``model.source`` (what report.json records)."""
    return load_weights(weights, device, cache_dir=cache_dir, offline=offline)[0]


def load_weights(spec, device: str = "auto", *, cache_dir=None, offline=None):
    """Resolve ``spec`` (name, path, URL, None) and load it on ``device``: (model, info)."""
    from .model import load_model
    from .networks import select_device
    from .weights import resolve

    resolved = resolve(spec, cache_dir=cache_dir, offline=offline, progress=True)
    model = load_model(resolved.path, select_device(device)).for_inference()
    info = {"name": resolved.name, "path": str(resolved.path), "sha256": resolved.sha256,
            "source": resolved.source, "classes": list(model.classes)}
    model.source = info
    return model, info


def slice_geometry(volume: io.Volume, model, opts: SegmentOptions,
                   frames: np.ndarray | None = None) -> tuple[int, dict]:
    """Slice axis, heart ROI, base, apex direction and initialisation slice, with reasons.

    ``frames`` (i, j, k, t): the heart is located on each frame of a cine and its centre
    and per-slice areas taken as their medians over the frames, so that one ROI and one
    base serve the whole cycle.
    """
    base_slice, roi = opts.base_slice, opts.roi
    axis, axis_why = _slice_axis(volume, opts.slice_axis)
    n = volume.shape[axis]
    if base_slice is not None and not 0 <= base_slice < n:
        raise GeometryError(f"{volume.source}: --base-slice {base_slice} is outside the "
                            f"{n} slices (0..{n - 1}) along axis {axis}")
    lgrid = preprocess.locator_grid(volume.affine, volume.shape, axis)
    centre, areas = _locate_heart(model, lgrid, volume.data[..., None] if frames is None else frames)
    if roi is not None:
        centre, roi_why = tuple(float(c) for c in roi), "given by --roi"
    elif np.isfinite(centre[0]):
        roi_why = "heart located automatically (locator network)" + \
            ("" if frames is None else f", median over {frames.shape[3]} frames")
    else:
        raise GeometryError(f"{volume.source}: no heart found by the locator; pass --roi I,J "
                            "(heart centre in voxels) and --base-slice")
    if opts.apex_sign not in (None, 1, -1):
        raise GeometryError(f"{volume.source}: the apex direction must be +1 or -1, not "
                            f"{opts.apex_sign}")
    base, sign, apex, base_why, call = _base_and_apex(volume, model, axis, centre, frames, areas,
                                                      base_slice, n, opts.apex_sign)
    # The initialisation slice sits halfway from base to apex, on the stack's own grid.
    step = volume.spacing[axis] / model.config["spacing_mm"]
    init_stack = int(round(abs(apex - base) * step / 2))
    init_slice = base + sign * init_stack / step
    report_geo = {"slice_axis": axis, "slice_axis_reason": axis_why, "n_slices": n,
                  "base_slice": int(base), "base_reason": base_why,
                  "apex_direction": "increasing index" if sign > 0 else "decreasing index",
                  "apex_reason": _apex_reason(opts),
                  "apex_slice_estimate": int(apex), "init_slice": round(float(init_slice), 2),
                  "init_reason": "middle of the heart between base and apex (as the paper)",
                  "roi_center_voxels": [round(c, 2) for c in centre], "roi_reason": roi_why,
                  "heart_area_mm2_per_slice": [round(float(a)) for a in areas]}
    if call is not None:
        report_geo["base_detection"] = {**call.as_dict(), "detector": (
            "fitted for these weights" if "base_detector" in model.record else "bvmesh.base.MODEL")}
    return axis, {"base_slice": base, "apex_sign": sign, "roi_center": centre,
                  "init_stack": init_stack, "report": report_geo,
                  "frame_bases": list(call.frame_bases) if call is not None else None}


def place_init(geo: dict, model, image: np.ndarray, grid: StackGrid, axis: int,
               acquired: np.ndarray, opts: SegmentOptions) -> tuple[dict, tuple | None]:
    """``geo`` with the initialisation slice checked against the initialisation network's
    reading of the acquired slices of stack ``image`` (:func:`init_before_waist`), and that
    reading (fusion's anchor reuses it); without propagation ``geo`` and None."""
    if not opts.propagation:
        return geo, None
    from .propagate import read_acquired

    reading = read_acquired(model, image[None], acquired)
    return init_before_waist(geo, reading, model.classes, grid, axis), reading


def init_before_waist(geo: dict, reading: tuple[np.ndarray, np.ndarray], classes, grid: StackGrid,
                      axis: int) -> dict:
    """``geo`` with the initialisation slice halfway from the base to the LV cavity's waist,
    where the initialisation network, read on the acquired slices (``reading``:
    :func:`bvmesh.propagate.read_acquired`'s), sees the cavity narrow and then widen again
    toward the apex (:func:`bvmesh.plausibility.cavity_waist`): a bright organ beyond the
    apex, a fluid-filled stomach, that the locator counted as heart, so that the middle of
    its extent lay in the organ or past the heart's narrowing. ``geo`` itself where there
    is no waist or the initialisation slice lies basal of it (then on the heart; the
    plausibility rules take the organ from there, and a move by a fraction of a slice
    would only change which slice propagation starts from)."""
    from .plausibility import cavity_waist

    read, probs = reading
    cavity = (probs[0].argmax(0) == 1 + list(classes).index("lv_pool")).sum(axis=(1, 2))
    found = cavity_waist(cavity.astype(float), 0, grid.spacing_mm ** 2)
    if found is None or geo["init_stack"] < read[found[0]]:
        return geo
    init_stack = int(read[found[0]]) // 2
    report = {**geo["report"], "init_slice": round(float(grid.input_slice(init_stack, axis)), 2),
              "init_reason": "middle of the heart between base and slice "
                             f"{float(grid.input_slice(read[found[0]], axis)):.0f}, where the LV "
                             "cavity is narrowest before it widens again toward the apex "
                             "(another organ)"}
    return {**geo, "init_stack": init_stack, "report": report}


def _apex_reason(opts: SegmentOptions) -> str:
    if opts.apex_sign is not None:
        return "given"
    if opts.base_slice is None:
        return "the network's sections of the ventricles are smaller at that end"
    return "the heart runs on longer on that side of the given base"


def _locate_heart(model, lgrid: StackGrid, frames: np.ndarray) -> tuple[tuple[float, float], np.ndarray]:
    """Heart centre (voxels, in-plane) and area per slice (mm²): medians over ``frames``."""
    from .propagate import locate

    centres, areas = [], []
    for t in range(frames.shape[3]):
        mask = locate(model, preprocess.locator_input(frames[..., t], lgrid)) > 0.5
        heart = preprocess.heart_from_mask(mask, lgrid)
        centres.append(heart.center)
        areas.append(heart.areas_mm2)
    found = np.array([np.isfinite(c[0]) for c in centres])
    if not found.any():
        return (float("nan"), float("nan")), np.zeros_like(areas[0])
    centre = np.median(np.array(centres)[found], axis=0)
    return (float(centre[0]), float(centre[1])), np.median(np.array(areas), axis=0)


def _slice_axis(volume: io.Volume, slice_axis: int | None) -> tuple[int, str]:
    if slice_axis is None:
        return geometry.find_slice_axis(volume.spacing, volume.shape)
    if slice_axis not in (0, 1, 2):
        raise GeometryError(f"{volume.source}: --slice-axis must be 0, 1 or 2, not {slice_axis}")
    return slice_axis, f"axis {slice_axis}: given by --slice-axis"


def _base_and_apex(volume: io.Volume, model, axis: int, centre, frames: np.ndarray | None,
                   areas: np.ndarray, base_slice: int | None, n: int, given_sign: int | None):
    """(base, apex direction +-1, apex slice, why, the detector's call or None)."""
    call = None
    if base_slice is None:
        if not areas.any():
            raise GeometryError(f"{volume.source}: cannot detect the base without a located heart; "
                                "pass --base-slice")
        from . import base as detector

        first, last = geometry.heart_extent(areas)
        probs, deep = detector.read_slices(model, volume.data[..., None] if frames is None
                                           else frames, volume.affine, axis, centre)
        call, sign = detector.detect(probs, model.classes, model.config["spacing_mm"], areas,
                                     first, last, given_sign, detector.detector_of(model), deep)
        base = call.base
        why = (f"heart found on slices {first}..{last}; slice {base} is where the LV myocardium "
               f"still surrounds the cavity (runner-up {call.runner_up}, "
               f"log-odds margin {call.margin:.2f})")
    else:
        base, why = base_slice, "given by --base-slice"
        sign = given_sign or (geometry.apex_sign_from_areas(areas, base) if areas.any()
                              else (1 if base < n / 2 else -1))
    end = n - 1 if sign > 0 else 0
    if not areas.any():
        return base, sign, end, why, call
    first, last = geometry.heart_extent(areas)
    apex = last if sign > 0 else first
    return base, sign, apex if (apex - base) * sign > 0 else end, why, call


def measurements(labels: np.ndarray, affine: np.ndarray) -> dict:
    """Volumes (ml) of each structure and the LV mass (g) on the input grid."""
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES) + 1)
    out = {f"{name}_ml": round(float(counts[i + 1] * voxel_ml), 2) for i, name in enumerate(CLASS_NAMES)}
    out["lv_mass_g"] = round(float(counts[LV_MYO] * voxel_ml * MYOCARDIAL_DENSITY), 2)
    out["myocardium_ml"] = round(float(sum(counts[v] for v in MYOCARDIUM) * voxel_ml), 2)
    return out

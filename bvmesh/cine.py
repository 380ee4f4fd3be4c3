"""`segment_cine()`: every frame of a 4D cine on one geometry, fused in time; ED, ES and
the function figures (volumes, stroke volume, ejection fraction, LV mass).

    cine -> one slice geometry (heart located on every frame, medians) -> every frame's
         stack through the networks (frames batched, fusion anchored on the acquired
         slices, as a single volume's) -> temporal fusion of probabilities -> per-frame
         labels (pipeline.finish) -> volume curves -> ED, ES -> function

The paper names temporal consistency as its next step. Here the base, the ROI and the
stack grid are chosen once per cine, so a frame cannot differ from its neighbour by a
shifted crop (so is the initialisation slice, halfway to the locator's apex: a single
volume's is also moved basal of a cavity that widens again past the apex,
:func:`~bvmesh.pipeline.init_before_waist`, which frames batched on one slice cannot
each do); the base descends toward the apex at end-systole, so a frame whose own
base call lies one or two slices apical of the cine's starts there instead. Each
frame's class probabilities are averaged with its neighbours' (weights
:data:`TEMPORAL_WEIGHTS`, symmetric, so the volume curve is smoothed without lag; the
cycle is periodic, so the first and last frames are neighbours).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from . import io, preprocess
from .errors import InputError
from .labels import MYOCARDIUM
from .pipeline import (
    SegmentOptions,
    SegmentResult,
    finish,
    model_and_info,
    refuse_label_map,
    report_head,
    slice_geometry,
    stack_grid,
    timer,
)

log = logging.getLogger(__name__)

#: Temporal fusion: a frame's probabilities = this weighted mean of (previous, own, next).
TEMPORAL_WEIGHTS = (0.25, 0.5, 0.25)
#: Fewer frames than this are not a sampled cycle (e.g. ED and ES alone): no fusion.
MIN_FUSION_FRAMES = 5
#: Frames per network call: bounds the memory of a 30-frame cine.
FRAME_CHUNK = 4
#: How far (input slices) a frame's own base may lie apical of the cine's: ACDC's manual
#: base descends 1-2 slices from ED to ES; a frame's own call further off is not trusted.
FRAME_BASE_SHIFT = 2
#: The per-frame volumes of volumes.csv and their curves.
CURVES = ("lv_pool_ml", "lv_myo_ml", "rv_pool_ml", "rv_myo_ml")


@dataclass(frozen=True)
class CineResult:
    """Every frame's :class:`SegmentResult`, the cine, its ED and ES frames and its report."""

    cine: io.Cine
    frames: tuple[SegmentResult, ...]
    ed: int
    es: int
    report: dict

    @property
    def labels(self) -> np.ndarray:
        """uint8 (i, j, k, t) on the cine's grid."""
        return np.stack([f.labels for f in self.frames], axis=3)

    @property
    def myocardium(self) -> np.ndarray:
        return np.isin(self.labels, MYOCARDIUM).astype(np.uint8)

    @property
    def volumes(self) -> dict[str, list[float]]:
        """Each structure's volume (ml) per frame."""
        return {k: [f.report["measurements"][k] for f in self.frames] for k in CURVES}


def segment_cine(source: str | os.PathLike | io.Cine, options: SegmentOptions | None = None, *,
                 ed: int | None = None,
                 es: int | None = None, height_cm: float | None = None,
                 weight_kg: float | None = None, temporal: bool = True,
                 weights: str | os.PathLike | None = None, model=None, device: str = "auto",
                 cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                 **fields) -> CineResult:
    """Segment every frame of a cine (4D NIfTI or a multi-phase DICOM folder).

    ``options`` (:class:`bvmesh.pipeline.SegmentOptions`) or its fields as keywords, as
    for :func:`bvmesh.segment`; one geometry serves every frame.
    ``ed``/``es``: 0-based frames to use instead of the largest and smallest LV pool.
    ``height_cm`` and ``weight_kg``: index the function figures to body surface area.
    ``temporal=False`` segments the frames independently (no temporal fusion).
    """
    opts = (options or SegmentOptions()).with_fields(**fields)
    times, lap = timer()
    cine = source if isinstance(source, io.Cine) else io.load_cine(source)
    refuse_label_map(cine.data[..., 0], cine.source)
    n = cine.n_frames
    for name, value in (("ed", ed), ("es", es)):
        if value is not None and not 0 <= value < n:
            raise InputError(f"{cine.source}: the {name.upper()} frame given, {value}, is not "
                             f"one of its frames (0..{n - 1})")
    lap("read")
    model, weights_info = model_and_info(model, weights, device, cache_dir, offline)
    lap("load_model")
    first = cine.frame(0)
    axis, geo = slice_geometry(first, model, opts, frames=cine.data)
    grid = stack_grid(first, model, axis, geo)
    lap("locate")
    probs = _network(model, cine, grid, axis, geo["init_stack"], opts)
    lap("network")
    fused = temporal and n >= MIN_FUSION_FRAMES

    def one(t: int) -> SegmentResult:
        volume = cine.frame(t)
        p = fuse(probs, t) if fused else probs[t].astype(np.float32)
        own = frame_geo(geo, t, first.spacing[axis] / grid.spacing_mm)
        own_grid = grid
        if own is not geo:  # this frame's base lies apical of the cine's: its own grid
            own_grid = stack_grid(first, model, axis, own)
            p = restack(p, grid, own_grid, axis)
        return finish(volume, p, own_grid, own, model, opts,
                      report_head(volume, weights_info, model, opts))

    frames = [one(t) for t in range(n)]
    ed, es, phase_why = ed_es([f.report["measurements"]["lv_pool_ml"] for f in frames], ed, es)
    lap("postprocess")
    frames = tuple(frames)
    report = _report(cine, frames, ed, es, phase_why, fused, temporal, height_cm, weight_kg, opts)
    report["timings_s"] = times
    return CineResult(cine, frames, ed, es, report)


def _network(model, cine: io.Cine, grid, axis: int, init_stack: int,
             opts: SegmentOptions) -> np.ndarray:
    """The stack probabilities of every frame, (F, K+1, S, H, W), kept as float16: half
    the memory of a 30-frame cine, and off float32 by under 5e-4 (a voxel's class could
    flip only where two classes tie within that). Every frame is anchored as a single
    volume is (on the acquired slices), so any frame can be meshed as it is."""
    from .propagate import segment_stacks

    frames, out = list(range(cine.n_frames)), None
    for start in range(0, len(frames), FRAME_CHUNK):
        ts = frames[start:start + FRAME_CHUNK]
        stacks = np.stack([preprocess.make_stack(cine.data[..., t], grid).image for t in ts])
        p = segment_stacks(model, stacks, init_stack, propagation=opts.propagation,
                           fusion=opts.fusion, acquired=grid.acquired(axis, cine.data.shape[axis]))
        if out is None:
            out = np.empty((len(frames), *p.shape[1:]), np.float16)
        out[start:start + len(ts)] = p
    return out


def frame_geo(geo: dict, t: int, layers_per_slice: float) -> dict:
    """The cine's geometry for frame ``t``: with the frame's own base when the detector
    put it 1 to :data:`FRAME_BASE_SHIFT` slices apical of the cine's (its stack then
    starts there: :func:`restack`; the initialisation slice stays where it was), else the
    cine's own."""
    bases = geo.get("frame_bases")
    if not bases:
        return geo
    shift = (bases[t] - geo["base_slice"]) * geo["apex_sign"]
    if not 0 < shift <= FRAME_BASE_SHIFT:
        return geo
    report = {**geo["report"], "base_slice": int(bases[t]),
              "base_reason": f"this frame's own base, {shift} slice(s) apical of the cine's "
                             f"(slice {geo['base_slice']})"}
    init = max(0, int(round(geo["init_stack"] - shift * layers_per_slice)))
    return {**geo, "base_slice": int(bases[t]), "init_stack": init, "report": report}


def restack(probs: np.ndarray, grid, own, axis: int) -> np.ndarray:
    """Stack probabilities (K+1, S, H, W) on ``grid`` moved onto ``own``, a grid of the
    same ROI starting further toward the apex: linear along the stack axis (the in-plane
    grid is the same)."""
    layers = np.arange(own.shape[0])
    k = own.input_slice(layers, axis)  # their input slice
    at = np.clip((k - grid.to_input[axis, 3]) / grid.to_input[axis, 0], 0, probs.shape[1] - 1)
    lo = np.floor(at).astype(int)
    hi = np.minimum(lo + 1, probs.shape[1] - 1)
    w = (at - lo).astype(np.float32)[None, :, None, None]
    return (1 - w) * probs[:, lo] + w * probs[:, hi]


def fuse(probs: np.ndarray, t: int) -> np.ndarray:
    """Frame ``t``'s probabilities averaged with its neighbours' (periodic), float32."""
    n = len(probs)
    before, own, after = TEMPORAL_WEIGHTS
    return (before * probs[(t - 1) % n].astype(np.float32) + own * probs[t].astype(np.float32)
            + after * probs[(t + 1) % n].astype(np.float32))


def ed_es(lv_pool_ml: list[float], ed: int | None = None,
          es: int | None = None) -> tuple[int, int, dict[str, str]]:
    """End-diastole (largest LV pool) and end-systole (smallest), each unless given."""
    why = {"ed": "given by --ed" if ed is not None else "largest LV blood pool",
           "es": "given by --es" if es is not None else "smallest LV blood pool"}
    ed = int(np.argmax(lv_pool_ml)) if ed is None else ed
    es = int(np.argmin(lv_pool_ml)) if es is None else es
    return ed, es, why


def body_surface_area(height_cm: float, weight_kg: float) -> float:
    """Mosteller's formula (m²), the one CMR reference ranges are indexed with."""
    return float(np.sqrt(height_cm * weight_kg / 3600.0))


def function_figures(ed_m: dict, es_m: dict, height_cm: float | None = None,
                     weight_kg: float | None = None) -> dict:
    """EDV, ESV, SV (ml), EF (%) of both ventricles and the LV mass at ED (g), from the ED
    and ES frames' measurements; each also per m² of body surface area when known."""
    out: dict[str, float | None] = {}
    for side in ("lv", "rv"):
        edv, esv = ed_m[f"{side}_pool_ml"], es_m[f"{side}_pool_ml"]
        out[f"{side}_edv_ml"], out[f"{side}_esv_ml"] = edv, esv
        out[f"{side}_sv_ml"] = round(edv - esv, 2)
        out[f"{side}_ef_pct"] = round(100.0 * (edv - esv) / edv, 1) if edv > 0 else None
    out["lv_mass_ed_g"] = ed_m["lv_mass_g"]
    if height_cm and weight_kg:
        bsa = body_surface_area(height_cm, weight_kg)
        out["bsa_m2"] = round(bsa, 3)
        for key in [k for k in out if k.endswith(("_ml", "_g")) and out[k] is not None]:
            unit = "ml" if key.endswith("_ml") else "g"
            out[key.removesuffix(f"_{unit}") + f"_{unit}_per_m2"] = round(out[key] / bsa, 2)
    return out


def _report(cine: io.Cine, frames, ed: int, es: int, phase_why: dict, fused: bool,
            temporal: bool, height_cm, weight_kg, opts: SegmentOptions) -> dict:
    from .checks import assess_cine

    head = dict(frames[ed].report)
    for key in ("frame", "measurements", "qc", "plausibility", "timings_s"):
        head.pop(key, None)
    head["shape"] = list(cine.data.shape)
    head["geometry"] = {**head["geometry"], "notes": list(cine.notes)}
    time_of = (lambda t: cine.times_ms[t]) if cine.times_ms else (lambda t: None)
    curves = {k: [f.report["measurements"][k] for f in frames] for k in CURVES}
    function = function_figures(frames[ed].report["measurements"], frames[es].report["measurements"],
                                height_cm, weight_kg)
    head["cine"] = {
        "n_frames": cine.n_frames, "times_ms": list(cine.times_ms) if cine.times_ms else None,
        "ed": {"frame": ed, "time_ms": time_of(ed), "reason": phase_why["ed"]},
        "es": {"frame": es, "time_ms": time_of(es), "reason": phase_why["es"]},
        "temporal_fusion": {"used": fused, "weights": list(TEMPORAL_WEIGHTS) if fused else None,
                            "note": None if fused or not temporal else
                            f"fewer than {MIN_FUSION_FRAMES} frames: frames segmented alone"},
        "jitter_ml": {k: round(jitter(v), 3) for k, v in curves.items()},
        "body": {"height_cm": height_cm, "weight_kg": weight_kg},
    }
    head["measurements"] = frames[ed].report["measurements"]
    head["function"] = function
    head["frames"] = [{"frame": t, "time_ms": time_of(t), **f.report["measurements"],
                       "qc": f.report["qc"]["verdict"],
                       "removed_ml": round(sum(r["ml"] for r in f.report.get("plausibility", [])), 2)}
                      for t, f in enumerate(frames)]
    myo = [f.report["measurements"]["myocardium_ml"] for f in frames]
    head["qc"] = assess_cine({"ED": frames[ed].report["qc"], "ES": frames[es].report["qc"]},
                             function, myo, strict=opts.qc_strict)
    head["warnings"] = sorted({w for f in frames for w in f.report["warnings"]})
    if opts.probabilities:
        head["warnings"].append("probabilities are not written for a cine")
    return head


def jitter(curve: list[float]) -> float:
    """Mean |V_t - (V_t-1 + V_t+1) / 2| over the frames (periodic): how far each frame's
    volume lies off the straight line between its neighbours; 0 for a smooth curve."""
    v = np.asarray(curve, float)
    if len(v) < 3:
        return 0.0
    return float(np.mean(np.abs(v - 0.5 * (np.roll(v, 1) + np.roll(v, -1)))))


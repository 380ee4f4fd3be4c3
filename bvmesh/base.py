"""The base slice and the apex direction, read from the image.

ACDC's labels (and most manual contours) start at the most basal slice on which the LV
myocardium still surrounds the LV cavity; the slices above it (left atrium, outflow
tracts) are not ventricle. The detector reads each acquired slice of the heart's ROI
with the initialisation network and describes it by a few numbers (:func:`slice_features`:
how much of the LV pool's rim is myocardium, how the sections change toward the next
slice, how sure the network is). A logistic model of "this slice lies above the base"
(fitted for each network on the subjects it trained on by ``scripts/base_detection.py
fit``; :data:`MODEL` for the bundled one) gives each candidate slice a probability; the
base is the first candidate, from the base end, more likely not above the base than
above it (the labels' definition: the most basal slice that is ventricle), and how far
one slice's log-odds are from flipping the call says how close it was.

The apex lies at the end of the heart's slice range where the network's sections (LV
pool, LV myocardium, RV pool) are smaller: the ventricles taper to the apex.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: The features of one slice, in the order of :data:`MODEL`'s weights.
FEATURES = ("rim_myocardium", "rim_angles", "myo_change", "pool_change", "heart_change",
            "myo_of_largest", "heart_of_largest", "rv_share", "confidence", "myo_confidence")

#: Logistic model of P(slice above the base) on standardised features: (means, scales,
#: weights, intercept), for weights that carry no fit of their own (see
#: :func:`detector_of`). Fitted for bvmesh-acdc-v1 on the subjects it trained on, all 100
#: of ACDC's (200 volumes, 34 slices above a labelled base): ``python
#: scripts/base_detection.py features ACDC/training --weights bvmesh-acdc-v1 -o f.jsonl``
#: then ``fit f.jsonl`` (the bundled default, bvmesh-acdc-v4, carries its own fit, made the
#: same way). Positives weigh x2 (the rarer case; a base a slice too high adds an atrial slice's
#: volume).
MODEL = {
    "means": (0.9077, 0.9341, -0.2372, -0.1218, -0.1056, 0.7836, 0.8079, 0.4596, 0.921, 0.8637),
    "scales": (0.2354, 0.2049, 0.52, 0.5296, 0.5402, 0.2542, 0.2391, 0.1574, 0.03915, 0.151),
    "weights": (0.0951, -0.7625, 0.4557, 0.2709, -0.06487, -1.523, -0.8649, -0.575, -0.2324, -0.3439),
    "intercept": -3.916,
}

#: Candidate slices: one slice beyond the basal end of the located heart, that end and the
#: next CANDIDATES - 1 toward the apex (ACDC's labelled base lies 0-2 slices inside it).
CANDIDATES = 5

#: A call that one slice's log-odds change by less than this would flip is close: that
#: slice's P(above the base) is within 0.38-0.62. On the 800 training volumes of the five
#: cross-validation fits (decision offset included) it marks 7 % of the calls, a third of
#: them wrong; 1.0 marked 14 %, too many warnings for a cohort to look at (both printed
#: by ``scripts/base_detection.py fit``).
CLOSE_CALL = 0.5

#: An apex direction read from sections whose two ends differ by less than this (relative,
#: :func:`apex_contrast`) is a close call. On 440 held-out ACDC volumes read by 11 models
#: (the five folds of v2's and v3's recipes and fold 0 of v4's: ``python
#: scripts/base_detection.py apex ACDC/training --weights M...``) the direction was wrong on
#: 2, at contrasts 0.014 and 0.069; 3 fell under 0.1.
APEX_CLOSE = 0.1

#: Areas below this (mm^2) count as no section when taking ratios between slices.
_AREA_FLOOR = 100.0


@dataclass(frozen=True)
class BaseCall:
    """The detected base (input slice index), the runner-up and each candidate's P(above)."""

    base: int
    runner_up: int | None
    margin: float  # log-odds that would have to change sign for the runner-up to win
    candidates: tuple[int, ...]
    p_above: tuple[float, ...]  # per candidate
    frame_bases: tuple[int, ...] = ()  # a cine's: each frame's own call
    apex_contrast: float | None = None  # apex_contrast() of the direction read (None: given)

    @property
    def close(self) -> bool:
        return self.runner_up is not None and self.margin < CLOSE_CALL

    def as_dict(self) -> dict:
        return {"base_slice": self.base, "runner_up": self.runner_up,
                "margin": round(self.margin, 3) if np.isfinite(self.margin) else None,
                "close_call": self.close,
                "candidates": list(self.candidates),
                "p_above_base": [round(p, 3) for p in self.p_above],
                "apex_contrast": None if self.apex_contrast is None else round(self.apex_contrast, 3)}


def sections(probs: np.ndarray, classes: tuple[str, ...], spacing_mm: float) -> dict[str, np.ndarray]:
    """Per-slice areas (mm²) of each class in the network's reading, (n, K+1, H, W) probs."""
    labels = probs.argmax(1)
    return {c: (labels == i + 1).sum((1, 2)) * spacing_mm ** 2 for i, c in enumerate(classes)}


def slice_features(probs: np.ndarray, classes: tuple[str, ...], spacing_mm: float,
                   heart_areas: np.ndarray) -> np.ndarray:
    """:data:`FEATURES` of every slice, (n, len(FEATURES)).

    ``probs`` (n, K+1, H, W): the initialisation network on each acquired slice, ordered
    from the base end toward the apex end; ``heart_areas`` (n,): the locator's heart
    area per slice (mm²), in the same order. The change features compare a slice with the
    next one toward the apex.
    """
    labels = probs.argmax(1)
    pool_v, myo_v = 1 + classes.index("lv_pool"), 1 + classes.index("lv_myo")
    area = sections(probs, classes, spacing_mm)
    pool, myo = area["lv_pool"], area["lv_myo"]
    rv = area.get("rv_pool", np.zeros_like(pool))
    heart = np.asarray(heart_areas, float)
    nxt = np.r_[np.arange(1, len(pool)), len(pool) - 1]

    def change(a: np.ndarray) -> np.ndarray:
        return np.log((a + _AREA_FLOOR) / (a[nxt] + _AREA_FLOOR))

    rims = np.array([_rim_closure(lab == pool_v, lab == myo_v) for lab in labels]).reshape(-1, 2)
    confidence = [float(p.max(0)[lab > 0].mean()) if (lab > 0).any() else 1.0
                  for p, lab in zip(probs, labels)]
    myo_confidence = [float(p[myo_v][lab == myo_v].mean()) if (lab == myo_v).any() else 0.0
                      for p, lab in zip(probs, labels)]
    return np.column_stack([rims[:, 0], rims[:, 1], change(myo), change(pool), change(heart),
                            myo / (myo.max() + 1), heart / (heart.max() + 1),
                            rv / (rv + pool + myo + _AREA_FLOOR), confidence, myo_confidence])


def _rim_closure(pool: np.ndarray, myo: np.ndarray) -> tuple[float, float]:
    """Share of the LV pool's 2-pixel rim that is myocardium, and share of 36 angular
    sectors around the pool's centre (within 40 pixels) that hold myocardium."""
    if pool.sum() <= 5:
        return 0.0, 0.0
    rim = ndimage.binary_dilation(pool, iterations=2) & ~pool
    cy, cx = np.argwhere(pool).mean(0)
    ys, xs = np.nonzero(myo)
    near = np.hypot(ys - cy, xs - cx) < 40
    sectors = np.floor((np.arctan2(ys - cy, xs - cx)[near] + np.pi) / (2 * np.pi) * 36).astype(int) % 36
    return float(myo[rim].mean()), len(np.unique(sectors)) / 36


def detector_of(model) -> dict:
    """The logistic model fitted for ``model``'s network (its record's ``base_detector``,
    written by ``scripts/base_detection.py fit --into``), else :data:`MODEL`: the features
    come from the network, so each network is best served by its own fit."""
    return model.record.get("base_detector") or MODEL


def p_above(features: np.ndarray, model: dict | None = None) -> np.ndarray:
    """P(slice above the base) of each row of :func:`slice_features`."""
    m = MODEL if model is None else model
    z = (features - np.asarray(m["means"])) / np.asarray(m["scales"])
    return 1.0 / (1.0 + np.exp(-(z @ np.asarray(m["weights"]) + m["intercept"])))


def call_base(p: np.ndarray, candidates: list[int]) -> BaseCall:
    """The base: the first candidate (from the base end) more likely not above the base.

    That is the labels' definition, the most basal slice that is ventricle: a slice the
    network misreads further toward the apex cannot move it. ``p`` (C,) or, for the
    frames of a cine, (F, C): the frames' log-odds are averaged. The margin is how far
    the call is from flipping, in log-odds: the base read as above (runner-up: the next
    slice) or the slice before it read as not above (runner-up: that slice).
    """
    p = np.clip(np.atleast_2d(np.asarray(p, float)), 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p)).mean(0)
    below = np.flatnonzero(logit < 0)
    i = int(below[0]) if len(below) else len(logit) - 1
    flips = {}  # runner-up place -> the log-odds that would have to change sign
    if i + 1 < len(logit):
        flips[i + 1] = -logit[i]
    if i > 0:
        flips[i - 1] = logit[i - 1]
    runner = min(flips, key=flips.get) if flips else None
    return BaseCall(candidates[i], None if runner is None else candidates[runner],
                    float(flips[runner]) if flips else float("inf"), tuple(candidates),
                    tuple(float(x) for x in 1 / (1 + np.exp(-logit))))


def candidate_slices(first: int, last: int, sign: int, n: int) -> list[int]:
    """The input slices the base may lie on, from the base end of the heart [first, last]."""
    end = first if sign > 0 else last
    return [k for k in (end + sign * (i - 1) for i in range(CANDIDATES + 1)) if 0 <= k < n]


def apex_sign(areas: dict[str, np.ndarray], first: int, last: int) -> int:
    """+1 when the ventricles' sections (summed) are smaller toward increasing index."""
    top, bottom = _end_sections(areas, first, last)
    return 1 if top >= bottom else -1


def apex_contrast(areas: dict[str, np.ndarray], first: int, last: int) -> float:
    """How clearly :func:`apex_sign` decided: the two ends' summed sections' difference
    relative to the larger (0: equal, a coin toss; 1: one end empty)."""
    top, bottom = _end_sections(areas, first, last)
    return float(abs(top - bottom) / max(top, bottom)) if max(top, bottom) > 0 else 0.0


def _end_sections(areas: dict[str, np.ndarray], first: int, last: int) -> tuple[float, float]:
    """Mean summed section (mm²) of the first and the last third of slices [first, last]."""
    total = sum(areas.values())
    n = max(1, (last - first + 1) // 3)
    return float(total[first:first + n].mean()), float(total[last - n + 1:last + 1].mean())


def read_slices(model, frames: np.ndarray, affine: np.ndarray, slice_axis: int,
                centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The initialisation network on the heart's ROI of every acquired slice of every frame:
    probabilities (F, n, K+1, H, W) and encoder features (F, n, D; see
    :func:`encoder_features`), slices in input order. ``frames``: (i, j, k, t)."""
    from . import geometry, preprocess

    grid = geometry.slice_rois(affine, frames.shape[:3], slice_axis=slice_axis, center=centre,
                               size=model.config["size"], spacing_mm=model.config["spacing_mm"])
    images = np.stack([preprocess.make_stack(frames[..., t], grid).image
                       for t in range(frames.shape[3])])
    probs, deep = _read(model, images.reshape(-1, *images.shape[2:]))
    return probs.reshape(*images.shape[:2], *probs.shape[1:]), deep.reshape(*images.shape[:2], -1)


def _read(model, images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    import torch

    device = next(model.init.parameters()).device
    probs, deep = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch, None], np.float32))
            taps: list = []
            p = torch.softmax(model.init(x.to(device), taps)[-1], 1)
            probs.append(p.cpu().numpy())
            deep.append(encoder_features(taps, p).cpu().numpy())
    return np.concatenate(probs), np.concatenate(deep)


def encoder_features(maps: list, probs):
    """Per slice, each tapped encoder map's channels (bvmesh.networks.InitNet, ``taps``)
    averaged over the heart (weighted by the network's P(heart) at the map's resolution)
    and over the whole ROI: what the network sees there beyond the classes it draws."""
    import torch
    import torch.nn.functional as F

    heart = 1.0 - probs[:, :1]
    out = []
    for m in maps:
        w = F.interpolate(heart, size=m.shape[-2:], mode="area")
        out += [(m * w).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-3), m.mean((2, 3))]
    return torch.cat(out, 1)


def detector_inputs(features: np.ndarray, deep: np.ndarray | None, model: dict | None) -> np.ndarray:
    """The rows :func:`p_above` reads: :func:`slice_features`' rows and, for a detector
    fitted on the encoder too (its ``deep`` block: the features' mean and principal axes,
    ``scripts/base_detection.py fit --deep K``), their projections on those axes."""
    block = (MODEL if model is None else model).get("deep")
    if block is None:
        return features
    if deep is None:
        raise ValueError("this base detector reads the encoder features too; pass them")
    z = (np.asarray(deep, float) - np.asarray(block["mean"])) @ np.asarray(block["axes"]).T
    return np.concatenate([features, z], axis=-1)


def detect(probs: np.ndarray, classes: tuple[str, ...], spacing_mm: float,
           heart_areas: np.ndarray, first: int, last: int, sign: int | None = None,
           detector: dict | None = None, deep: np.ndarray | None = None) -> tuple[BaseCall, int]:
    """(base call, apex direction) from :func:`read_slices`' probabilities and encoder
    features (``deep``; needed by a detector fitted on them) of F frames.

    The located heart spans input slices [first, last]; the frames' log-odds are
    averaged, so a cine gets one base for its whole cycle (its grid starts there); each
    frame's own call is in ``frame_bases``. ``sign``: the apex
    direction when the user gave it; ``detector``: the logistic model (default
    :data:`MODEL`).
    """
    n = probs.shape[1]
    areas = [sections(p, classes, spacing_mm) for p in probs]
    contrast = None
    if sign is None:
        median = {c: np.median([a[c] for a in areas], axis=0) for c in classes}
        sign, contrast = apex_sign(median, first, last), apex_contrast(median, first, last)
    candidates = candidate_slices(first, last, sign, n)
    order = np.arange(n) if sign > 0 else np.arange(n)[::-1]  # base end first
    at = [k if sign > 0 else n - 1 - k for k in candidates]  # their places in that order
    p = [p_above(detector_inputs(slice_features(frame[order], classes, spacing_mm,
                                                heart_areas[order])[at],
                                 None if deep is None else deep[f][order][at], detector),
                 detector) for f, frame in enumerate(probs)]
    call = call_base(np.array(p), candidates)
    own = tuple(call_base(frame_p, candidates).base for frame_p in p)
    return dataclasses.replace(call, frame_bases=own, apex_contrast=contrast), sign

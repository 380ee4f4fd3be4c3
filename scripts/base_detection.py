"""The automatic base on held-out ACDC: fit the detector, then measure it.

    # 1. features of the candidate slices, with a model, on the subjects it trained on
    python scripts/base_detection.py features ACDC/training --weights runs/fold0-vendor/model.pt -o f.jsonl
    # 2. the logistic model, stored in that weights file (with --deep 0, the slice features
    #    alone, also printed, for bvmesh/base.py MODEL)
    python scripts/base_detection.py fit f.jsonl --into runs/fold0-vendor/model.pt
    # 3. its held-out subjects, auto base vs the manual one (and Dice both ways)
    python scripts/base_detection.py evaluate ACDC/training --weights runs/fold0-vendor/model.pt -o e.jsonl
    python scripts/base_detection.py table e.jsonl
    # the settings of the fit (encoder axes, penalty) on every fold's held-out subjects
    python scripts/base_detection.py features ACDC/training --all \
        --weights runs/foldK-vendor/model.pt -o aK.jsonl
    python scripts/base_detection.py grid a0.jsonl a1.jsonl a2.jsonl a3.jsonl a4.jsonl
    # the apex direction read from the section areas, on each model's held-out volumes
    python scripts/base_detection.py apex ACDC/training --weights crossval/fold{0,1,2,3,4}-vendor/model.pt

The manual base is the most basal slice the labels hold (ACDC labels the LV myocardium
from the slice where it still surrounds the cavity). Only scans with at least one slice
above that base say anything about detection; the table gives those apart (exact rate,
within one, signed error in slices: negative is too basal, ml predicted above the manual
base), then every volume (LV-myocardium Dice without and with ``--base-slice``), each as
is and under the vendor-like transforms of scripts/vendor_transforms.py; in brackets the
previous detector (the end of the located heart with the wider sections), read from the
same run's per-slice heart areas.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from heldout import dice, held_out_volumes, manual_base
from vendor_transforms import TRANSFORMS, transform

#: Positives (slices above the base) count twice in the fit; see bvmesh.base.MODEL.
POSITIVE_WEIGHT = 2.0
#: L2 penalty on the standardised weights: the slice features alone, and with the
#: encoder's principal axes.
PENALTY, PENALTY_DEEP = 1.0, 4.0
#: Principal axes of the encoder features (bvmesh.base.encoder_features) the fit adds.
#: Chosen with ``grid`` on the five folds' held-out subjects (docs/results.md).
DEEP_AXES = 12
#: The settings ``grid`` scores: (encoder axes, penalty).
GRID = [(0, 1.0)] + [(k, p) for k in (8, 12, 16, 24, 32) for p in (2.0, 4.0, 8.0, 16.0)]
#: Decision offsets (log-odds added to the intercept) tried after the fit. The logistic
#: loss weighs every candidate slice alike, but what counts is the call per volume: the
#: offset that calls the most training volumes exactly, those with slices above the base
#: and all of them counted alike, is kept (the fits put the first slice below the
#: atrium at P(above) 0.3-0.5, so their calls were a slice too basal).
OFFSETS = np.round(np.arange(-1.0, 3.01, 0.25), 2)


def network_reading(model, image: Path):
    """What the detector reads of one scan, as `bvmesh segment` reads it: (the volume, its
    slice axis, the locator's heart area per slice (mm2), the heart's first and last slice,
    the initialisation network's probabilities and encoder features per acquired slice)."""
    from bvmesh import base as detector
    from bvmesh import geometry, io
    from bvmesh.pipeline import SegmentOptions, slice_geometry

    volume = io.load(image)
    axis, geo = slice_geometry(volume, model, SegmentOptions(base_slice=0))
    areas = np.array(geo["report"]["heart_area_mm2_per_slice"], float)
    first, last = geometry.heart_extent(areas)
    probs, deep = (a[0] for a in detector.read_slices(
        model, volume.data[..., None], volume.affine, axis, geo["roi_center"]))
    return volume, axis, areas, first, last, probs, deep


def features(args) -> None:
    """Candidate-slice features of the model's training subjects, one JSON line a volume."""
    from bvmesh import base as detector
    from bvmesh.pipeline import load_weights

    model, _ = load_weights(args.weights, "cpu")
    held = set(model.record["held_out_subjects"])
    subjects = sorted(p.name for p in Path(args.data).glob("patient*")
                      if args.all or p.name not in held)
    with args.output.open("w") as out:
        for case, image, gt in held_out_volumes(args.data, subjects):
            volume, axis, areas, first, last, probs, deep = network_reading(model, image)
            true_base, sign = manual_base(gt)
            candidates = detector.candidate_slices(first, last, sign, volume.shape[axis])
            order = np.arange(len(probs)) if sign > 0 else np.arange(len(probs))[::-1]
            f = detector.slice_features(probs[order], model.classes, model.config["spacing_mm"],
                                        areas[order])
            rows = [f[int(np.flatnonzero(order == k)[0])].tolist() for k in candidates]
            above = [bool((true_base - k) * sign > 0) for k in candidates]
            out.write(json.dumps({"case": case, "held_out": case.split("_")[0] in held,
                                  "candidates": candidates, "features": rows,
                                  "deep": [deep[k].round(5).tolist() for k in candidates],
                                  "above": above, "base": true_base}) + "\n")


def fit_rows(rows: list[dict], axes: int, penalty: float) -> dict:
    """Weighted, L2-penalised logistic regression on standardised features (with ``axes``
    principal axes of the encoder features, 0: none), its decision offset included."""
    from scipy.optimize import minimize

    deep = principal_axes(rows, axes) if axes else None
    x, y = training_slices(rows, deep)
    mean, scale = x.mean(0), x.std(0) + 1e-9
    z = np.c_[(x - mean) / scale, np.ones(len(x))]
    w_sample = np.where(y > 0, POSITIVE_WEIGHT, 1.0)

    def loss(w):
        t = z @ w
        return np.sum(w_sample * (np.logaddexp(0, t) - y * t)) + penalty * np.sum(w[:-1] ** 2)

    w = minimize(loss, np.zeros(z.shape[1]), method="L-BFGS-B").x
    fitted = {"means": mean.tolist(), "scales": scale.tolist(), "weights": w[:-1].tolist(),
              "intercept": float(w[-1])}
    if deep:
        fitted["deep"] = deep
    offset = best_offset(rows, fitted)
    fitted["intercept"] += offset
    fitted["offset"] = offset
    return fitted


def training_slices(rows: list[dict], deep: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """The fit's inputs and targets (1: above the base): the slices above the base, the
    base and the next slice of each volume; candidates further toward the apex say
    nothing new and would swamp the few positives."""
    x, y = [], []
    for r in rows:
        keep = sum(r["above"]) + 2
        x += list(inputs(r, deep)[:keep])
        y += [float(a) for a in r["above"][:keep]]
    return np.array(x), np.array(y)


def fit(args) -> None:
    """The detector for the features' network; stored with ``--into``, printed as MODEL."""
    from bvmesh.base import FEATURES

    rows = [json.loads(line) for line in args.features.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if not r.get("held_out")]
    fitted = fit_rows(rows, args.deep, PENALTY_DEEP if args.deep else PENALTY)
    offset = fitted["offset"]
    if args.into:  # the detector travels with the network whose features it was fitted on
        from bvmesh.model import load_model, save_checkpoint

        model = load_model(args.into)
        record = {**model.record, "base_detector": {**fitted, "fitted_on": f"{len(rows)} volumes"}}
        save_checkpoint(model, args.into, record)
    _, y = training_slices(rows, None)
    print(f"# {len(rows)} volumes, {len(y)} candidate slices, {int(y.sum())} above the base")
    print(f"# decision offset {offset:+g}; " + close_calls(rows, fitted))
    if args.deep:
        print(f"# with {args.deep} principal axes of the encoder features: the fit travels in "
              "the weights file (--into), too long for bvmesh/base.py MODEL")
        return
    print("MODEL = {")
    for key in ("means", "scales", "weights"):
        print(f'    "{key}": (' + ", ".join(f"{v:.4g}" for v in fitted[key]) + "),")
    print(f'    "intercept": {fitted["intercept"]:.4g},  # offset {offset:+g} included')
    print("}")
    print("# features:", ", ".join(FEATURES))


def principal_axes(rows: list[dict], k: int) -> dict:
    """The encoder features' mean and first ``k`` principal axes over every candidate
    slice of ``rows``, each feature standardised first (the axes carry the 1/sd)."""
    d = np.concatenate([np.array(r["deep"], float) for r in rows])
    mean, sd = d.mean(0), d.std(0) + 1e-6
    _, _, vt = np.linalg.svd((d - mean) / sd, full_matrices=False)
    return {"mean": mean.tolist(), "axes": (vt[:k] / sd).tolist()}


def inputs(row: dict, deep: dict | None) -> np.ndarray:
    """The detector's input rows for one volume's candidates, with the projections on the
    ``deep`` block's axes when there is one (bvmesh.base.detector_inputs)."""
    from bvmesh.base import detector_inputs

    return detector_inputs(np.array(row["features"]), row.get("deep"),
                           {"deep": deep} if deep else {})


def best_offset(rows: list[dict], detector: dict) -> float:
    """The offset of :data:`OFFSETS` that calls the most of ``rows`` (training volumes)
    exactly: the share of exact calls among volumes with slices above the base plus the
    share among all; the smallest offset wins a tie."""
    from bvmesh.base import call_base, p_above

    def score(offset: float) -> float:
        shifted = {**detector, "intercept": detector["intercept"] + offset}
        exact = np.array([call_base(p_above(inputs(r, detector.get("deep")), shifted),
                                    r["candidates"]).base == r["base"] for r in rows])
        above = np.array([any(r["above"]) for r in rows])
        return exact[above].mean() + exact.mean() if above.any() else exact.mean()

    scores = [score(o) for o in OFFSETS]
    return float(OFFSETS[int(np.argmax(scores))])  # argmax: the first (smallest) of a tie


def close_calls(rows: list[dict], detector: dict, thresholds=(0.25, 0.5, 1.0)) -> str:
    """How many of ``rows``' calls each margin threshold marks as close, and how many of
    those are wrong (what bvmesh.base.CLOSE_CALL is chosen from)."""
    from bvmesh.base import call_base, p_above

    calls = [call_base(p_above(inputs(r, detector.get("deep")), detector), r["candidates"])
             for r in rows]
    margin = np.array([c.margin for c in calls])
    wrong = np.array([c.base != r["base"] for c, r in zip(calls, rows)])
    return "; ".join(f"margin < {t:g}: {(margin < t).mean():.1%} of calls, "
                     f"{wrong[margin < t].sum()} of them wrong" for t in thresholds)


def grid(args) -> None:
    """Each fold's fit on its training rows, scored on its held-out rows (``features
    --all``), for every setting of :data:`GRID`: the held-out calls, pooled over the folds."""
    from bvmesh.base import call_base, p_above

    folds = [[json.loads(line) for line in p.read_text().splitlines() if line.strip()]
             for p in args.features]
    print("| encoder axes | penalty | exact, scans with slices above | within one | exact, all |")
    print("|---|---|---|---|---|")
    for axes, penalty in GRID:
        err, above = [], []
        for rows in folds:
            fitted = fit_rows([r for r in rows if not r["held_out"]], axes, penalty)
            for r in (r for r in rows if r["held_out"]):
                call = call_base(p_above(inputs(r, fitted.get("deep")), fitted), r["candidates"])
                err.append(abs(call.base - r["base"]))
                above.append(any(r["above"]))
        err, above = np.array(err), np.array(above)
        print(f"| {axes} | {penalty:g} | {np.mean(err[above] == 0):.0%} of {above.sum()} | "
              f"{np.mean(err[above] <= 1):.0%} | {np.mean(err == 0):.0%} of {len(err)} |")


def evaluate(args) -> None:
    """Held-out volumes: the auto base, the manual one, ml above it, Dice both ways."""
    from bvmesh import io
    from bvmesh.errors import BvmeshError
    from bvmesh.geometry import base_from_areas
    from bvmesh.pipeline import load_weights, segment

    model, _ = load_weights(args.weights, "cpu")
    rng = np.random.default_rng(0)
    with args.output.open("a") as out:
        for case, image, gt in held_out_volumes(args.data, model.record["held_out_subjects"]):
            volume = io.load(image)
            true_base, sign = manual_base(gt)
            # The vendor-like transforms only where the base has slices above it to tell apart.
            names = TRANSFORMS if true_base not in (0, gt.shape[2] - 1) else TRANSFORMS[:1]
            for name in names:
                v = dataclasses.replace(volume, data=transform(name, volume.data, volume.spacing, rng))
                top = 0 if sign > 0 else gt.shape[2] - 1
                row = {"case": case, "transform": name, "weights": str(args.weights),
                       "true_base": true_base, "above_slices": abs(true_base - top)}
                try:
                    auto = segment(v, model=model)
                    # Dice both ways is compared on the untransformed volumes only.
                    given = segment(v, model=model, base_slice=true_base) if name == TRANSFORMS[0] \
                        else None
                except BvmeshError as e:
                    row["error"] = str(e)
                    out.write(json.dumps(row) + "\n")
                    continue
                geo = auto.report["slices"]
                above = (np.arange(gt.shape[2]) - true_base) * sign < 0
                # The previous detector: the end of the located heart with the wider sections.
                areas = np.array(geo["heart_area_mm2_per_slice"], float)
                width_base = base_from_areas(areas)[0]
                row.update(base=geo["base_slice"], detection=geo.get("base_detection"),
                           error=int((geo["base_slice"] - true_base) * sign),
                           width_error=int((width_base - true_base) * sign),
                           ml_above=float((auto.labels[..., above] > 0).sum()
                                          * abs(np.linalg.det(volume.affine[:3, :3])) / 1000),
                           dice_auto=dice(auto.labels, gt)["lv_myo"],
                           dice_given=dice(given.labels, gt)["lv_myo"] if given else None)
                out.write(json.dumps(row) + "\n")
                out.flush()


def apex(args) -> None:
    """Each model's held-out volumes: is bvmesh.base.apex_sign, read from the initialisation
    network's sections, the labels' apex direction? With every class and with the LV's
    (pool and myocardium) alone."""
    from bvmesh import base as detector
    from bvmesh.pipeline import load_weights

    wrong: dict[str, list[str]] = {"every class": [], "the LV alone": []}
    close: list[str] = []
    count = 0
    for weights in args.weights:
        model, _ = load_weights(weights, "cpu")
        for case, image, gt in held_out_volumes(args.data, model.record["held_out_subjects"]):
            _, _, _, first, last, probs, _ = network_reading(model, image)
            areas = detector.sections(probs, model.classes, model.config["spacing_mm"])
            sign = manual_base(gt)[1]
            count += 1
            for name, classes in (("every class", model.classes), ("the LV alone", ("lv_pool", "lv_myo"))):
                if detector.apex_sign({c: areas[c] for c in classes}, first, last) != sign:
                    wrong[name].append(case)
            contrast = detector.apex_contrast(areas, first, last)
            if contrast < detector.APEX_CLOSE:
                close.append(f"{case} {contrast:.3f}")
            if case in wrong["every class"]:  # what the network read there
                print(f"{case}, heart on slices {first}..{last}, sections (mm2) per slice: "
                      + "; ".join(f"{c} {np.round(a).astype(int).tolist()}"
                                  for c, a in areas.items()))
    for name, cases in wrong.items():
        print(f"apex direction from {name}'s sections: wrong on {len(cases)} of {count}: "
              + (", ".join(cases) or "none"))
    print(f"every class's sections' contrast under {detector.APEX_CLOSE} (QC warns): "
          f"{len(close)} of {count}: " + (", ".join(close) or "none"))


def table(args) -> None:
    """Markdown rows per transform: the detector, and the previous width rule beside it."""
    rows = [json.loads(line) for p in args.results for line in p.read_text().splitlines()
            if line.strip()]
    print("| transform | scans with slices above the base | exact | within one | mean signed "
          "error (slices) | median ml above the manual base | worst error |")
    print("|---|---|---|---|---|---|---|")
    for name in TRANSFORMS:
        sel = [r for r in rows if r["transform"] == name and r["above_slices"] > 0 and "base" in r]
        if not sel:
            continue
        err, old = np.array([r["error"] for r in sel]), np.array([r["width_error"] for r in sel])
        print(f"| {name} | {len(sel)} | {np.mean(err == 0):.0%} (width rule {np.mean(old == 0):.0%}) | "
              f"{np.mean(abs(err) <= 1):.0%} ({np.mean(abs(old) <= 1):.0%}) | {err.mean():+.2f} "
              f"({old.mean():+.2f}) | {np.median([r['ml_above'] for r in sel]):.1f} | "
              f"{err[np.argmax(abs(err))]:+d} ({old[np.argmax(abs(old))]:+d}) |")
    every = [r for r in rows if r["transform"] == TRANSFORMS[0] and "base" in r]
    err = np.array([r["error"] for r in every])
    auto, given = ([r[k] for r in every] for k in ("dice_auto", "dice_given"))
    print(f"\nEvery volume as is ({len(every)}): exact {np.mean(err == 0):.0%}, within one "
          f"{np.mean(abs(err) <= 1):.0%}; LV-myocardium Dice mean {np.mean(auto):.4f} auto vs "
          f"{np.mean(given):.4f} with --base-slice (median {np.median(auto):.4f} vs "
          f"{np.median(given):.4f})")
    old = np.array([r["width_error"] for r in every])
    print(f"The width rule on every volume: exact {np.mean(old == 0):.0%}, within one "
          f"{np.mean(abs(old) <= 1):.0%}")
    wrong = [f"{r['case']} {r['error']:+d}" for r in every if r["error"]]
    print("off:", ", ".join(wrong) or "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("features", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("data")
        p.add_argument("--weights", required=True)
        p.add_argument("-o", "--output", type=Path, required=True)
        if name == "features":
            p.add_argument("--all", action="store_true", help="the held-out subjects too "
                           "(marked; fit leaves them out, grid scores on them)")
    fit_parser = sub.add_parser("fit")
    fit_parser.add_argument("features", type=Path)
    fit_parser.add_argument("--into", type=Path, help="store the fit in this weights file (the "
                            "network the features came from)")
    fit_parser.add_argument("--deep", type=int, default=DEEP_AXES, help="principal axes of the "
                            "encoder features to add (0: the slice features alone)")
    sub.add_parser("table").add_argument("results", type=Path, nargs="+")
    apex_parser = sub.add_parser("apex")
    apex_parser.add_argument("data")
    apex_parser.add_argument("--weights", nargs="+", required=True)
    sub.add_parser("grid").add_argument("features", type=Path, nargs="+",
                                        help="features --all files, one per fold")
    args = parser.parse_args()
    {"features": features, "fit": fit, "evaluate": evaluate, "table": table,
     "grid": grid, "apex": apex}[args.command](args)


if __name__ == "__main__":
    main()

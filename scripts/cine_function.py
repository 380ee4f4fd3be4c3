"""Cine measurements: ejection fraction against manual labels, ED/ES detection, temporal jitter.

    python scripts/cine_function.py ef ACDC/training --weights runs/fold0/model.pt -o ef.jsonl
    python scripts/cine_function.py cines --acdc ACDC/training --weights runs/fold0/model.pt \
        --example shared/data/example/sunnybrook-SC-HF-I-6 -o cines.jsonl
    python scripts/cine_function.py table ef.jsonl cines.jsonl

``ef``: every held-out subject of a cross-validation model (its record's subjects); its ED
and ES frames (Info.cfg) as a two-frame cine segmented by bvmesh.cine (one geometry for
both frames, ED and ES given, as the labelled frames are), and each frame segmented alone
(bvmesh.segment, its own base and ROI). LV and RV EF against the manual labels' EF: bias,
95 % limits of agreement (bias +- 1.96 SD), mean absolute error.

``cines``: the real cines (ACDC patient090, held out of fold 0, ED/ES from its Info.cfg;
the Sunnybrook GE cine, no labels) and beating phantoms with known ED/ES, each segmented
with and without temporal fusion: the detected ED and ES, and the jitter of each volume
curve (mean |V_t - (V_t-1 + V_t+1)/2|, ml; bvmesh.cine.jitter).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ACDC_LV_POOL, ACDC_RV_POOL = 3, 1
#: Beating phantoms measured: (frames, ES frame, determinant sign of the grid).
PHANTOMS = ((10, 4, 1), (20, 7, -1))


def phantom_key(n: int, es: int, det: int) -> str:
    return f"phantom {n} frames, ES {es}, det {det:+d}"


def phantom_truth_jitter(n: int, es: int, det: int) -> dict[str, float]:
    """The jitter of a beating phantom's own (exact) volume curves: what a smooth curve has."""
    from bvmesh.cine import jitter
    from bvmesh.testing import beating_phantom

    frames = beating_phantom(n, es, spacing=(1.6, 1.6, 9.0), det_sign=det)
    voxel = float(abs(np.linalg.det(frames[0].affine[:3, :3]))) / 1000
    return {k: jitter([float((p.labels == v).sum() * voxel) for p in frames])
            for k, v in (("lv_pool_ml", 1), ("rv_pool_ml", 3), ("lv_myo_ml", 2))}


def info(folder: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines()
                if ": " in line)


def manual_ml(path: Path) -> dict[str, float]:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    voxel = float(np.prod(img.header.get_zooms()[:3])) / 1000
    return {"lv": float((data == ACDC_LV_POOL).sum() * voxel),
            "rv": float((data == ACDC_RV_POOL).sum() * voxel)}


def ef(edv: float, esv: float) -> float:
    return 100.0 * (edv - esv) / edv if edv > 0 else float("nan")


def done_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}


def run_ef(args) -> None:
    from bvmesh import io
    from bvmesh.cine import segment_cine
    from bvmesh.pipeline import load_weights, segment

    model, _ = load_weights(args.weights, "cpu")
    subjects = model.record.get("held_out_subjects") or []
    if not subjects:
        sys.exit(f"{args.weights}: its record names no held-out subjects; use a fold model")
    done = done_keys(args.output)
    for subject in subjects:
        if subject in done:
            continue
        folder = Path(args.data) / subject
        cfg = info(folder)
        stems = [folder / f"{subject}_frame{int(cfg[p]):02d}" for p in ("ED", "ES")]
        truth = [manual_ml(Path(f"{s}_gt.nii.gz")) for s in stems]
        ed, es = (io.load(f"{s}.nii.gz") for s in stems)
        cine = io.Cine(np.stack([ed.data, es.data], axis=3), ed.affine, str(stems[0]))
        as_cine = segment_cine(cine, ed=0, es=1, model=model).report["function"]
        alone = [segment(v, model=model).report["measurements"] for v in (ed, es)]
        row = {"key": subject, "group": cfg.get("Group"),
               "manual": {s: ef(truth[0][s], truth[1][s]) for s in ("lv", "rv")},
               "manual_ml": truth,
               "cine": {"lv": as_cine["lv_ef_pct"], "rv": as_cine["rv_ef_pct"]},
               "cine_ml": {k: as_cine[k] for k in ("lv_edv_ml", "lv_esv_ml", "rv_edv_ml", "rv_esv_ml")},
               "alone": {s: ef(alone[0][f"{s}_pool_ml"], alone[1][f"{s}_pool_ml"]) for s in ("lv", "rv")}}
        with args.output.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(subject, row["manual"], row["cine"], row["alone"], flush=True)


def cine_row(key: str, cine, model, truth: tuple[int, int] | None, manual=None) -> dict:
    from bvmesh.cine import segment_cine

    row = {"key": key, "n_frames": cine.n_frames, "truth_ed_es": truth, "manual_ml": manual}
    for temporal in (True, False):
        r = segment_cine(cine, model=model, temporal=temporal, base_slice=None)
        rep = r.report
        row["fused" if temporal else "alone"] = {
            "ed": r.ed, "es": r.es, "jitter_ml": rep["cine"]["jitter_ml"],
            "function": rep["function"], "qc": rep["qc"]["verdict"],
            "lv_pool_ml": r.volumes["lv_pool_ml"], "rv_pool_ml": r.volumes["rv_pool_ml"],
            "myocardium_change": rep["qc"]["checks"]["myocardium_change"]["value"],
            "network_s": rep["timings_s"]["network"], "postprocess_s": rep["timings_s"]["postprocess"]}
        print(key, "fused" if temporal else "alone", r.ed, r.es, rep["cine"]["jitter_ml"], flush=True)
    return row


def run_cines(args) -> None:
    from bvmesh import io
    from bvmesh.pipeline import load_weights
    from bvmesh.testing import beating_phantom, phantom_image

    fold, _ = load_weights(args.weights, "cpu")
    bundled, _ = load_weights(None, "cpu")
    done = done_keys(args.output)
    jobs = []
    if args.acdc:
        folder = Path(args.acdc) / "patient090"
        cfg = info(folder)
        truth = (int(cfg["ED"]) - 1, int(cfg["ES"]) - 1)  # ACDC frames count from 1
        manual = [manual_ml(folder / f"patient090_frame{int(cfg[p]):02d}_gt.nii.gz") for p in ("ED", "ES")]
        # patient090 is held out of fold 0: segmented with the fold's model, not the bundled one.
        jobs.append(("acdc patient090", lambda: io.load_cine(folder / "patient090_4d.nii.gz"), fold,
                     truth, manual))
    if args.example:
        for name in ("cine_4d.nii.gz",):
            jobs.append((f"sunnybrook {name}", lambda n=name: io.load_cine(Path(args.example) / n),
                         bundled, None, None))
    for n, es, det in PHANTOMS:
        def make(n=n, es=es, det=det):
            frames = beating_phantom(n, es, spacing=(1.6, 1.6, 9.0), det_sign=det)
            data = np.stack([phantom_image(p, seed=t) for t, p in enumerate(frames)], axis=3)
            return io.Cine(data, frames[0].affine, f"phantom {n} frames")
        jobs.append((phantom_key(n, es, det), make, bundled, (0, es), None))
    for key, load, model, truth, manual in jobs:
        if key in done:
            continue
        row = cine_row(key, load(), model, truth, manual)
        with args.output.open("a") as fh:
            fh.write(json.dumps(row) + "\n")


def agreement(pairs: list[tuple[float, float]]) -> str:
    d = np.array([a - m for a, m in pairs])
    bias, sd = d.mean(), d.std(ddof=1)
    return (f"{bias:+.1f} | {bias - 1.96 * sd:+.1f} to {bias + 1.96 * sd:+.1f} | "
            f"{np.abs(d).mean():.1f}")


def run_table(args) -> None:
    for path in args.files:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        if rows and "manual" in rows[0]:
            print(f"\nEjection fraction, {len(rows)} held-out ACDC subjects (EF points)\n")
            print("| | bias | 95 % limits of agreement | mean abs. error |\n|---|---|---|---|")
            for side in ("lv", "rv"):
                for method, name in (("cine", "two-frame cine, one geometry"),
                                     ("alone", "each frame alone")):
                    pairs = [(r[method][side], r["manual"][side]) for r in rows]
                    print(f"| {side.upper()} EF, {name} | {agreement(pairs).replace(' | ', ' | ')} |")
            worst = max(rows, key=lambda r: abs(r["cine"]["rv"] - r["manual"]["rv"]))
            print(f"\nlargest RV EF error: {worst['key']} ({worst['group']}): "
                  f"{worst['cine']['rv']:.1f} vs {worst['manual']['rv']:.1f}")
        else:
            print("\n| cine | frames | true ED, ES | ED, ES fused | ED, ES alone | jitter LV pool "
                  "fused / alone (ml) | jitter RV pool | jitter LV myo | LV EF | RV EF |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                f, a = r["fused"], r["alone"]
                truth = "-" if r["truth_ed_es"] is None else ", ".join(map(str, r["truth_ed_es"]))
                jit = " | ".join(f"{f['jitter_ml'][k]:.2f} / {a['jitter_ml'][k]:.2f}"
                                 for k in ("lv_pool_ml", "rv_pool_ml", "lv_myo_ml"))
                print(f"| {r['key']} | {r['n_frames']} | {truth} | {f['ed']}, {f['es']} | "
                      f"{a['ed']}, {a['es']} | {jit} | {f['function']['lv_ef_pct']} | "
                      f"{f['function']['rv_ef_pct']} |")
            for params in PHANTOMS:
                truth = phantom_truth_jitter(*params)
                print(f"\ntrue jitter of {phantom_key(*params)}: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in truth.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ef")
    p.add_argument("data")
    p.add_argument("--weights", required=True)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("cines")
    p.add_argument("--acdc")
    p.add_argument("--example")
    p.add_argument("--weights", required=True, help="the fold model that held patient090 out")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("table")
    p.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.command != "table":
        import torch

        torch.set_num_threads(args.threads)
    {"ef": run_ef, "cines": run_cines, "table": run_table}[args.command](args)


if __name__ == "__main__":
    main()

"""Speed and memory of `bvmesh segment` on a cine.

    python benchmarks/bench_cine.py CINE [--weights W] [--repeats 3]

Measures, with medians over ``--repeats``:
1. ``bvmesh.segment_cine`` in a warm process (read, locate on every frame, networks on
   every frame, temporal fusion, per-frame labels, QC), per frame and by stage;
2. the whole `bvmesh segment` command from a cold process (all outputs: 4D labels,
   volumes.csv/png, meshes at ED and ES, qc pictures, report), wall time and peak memory.
Prints a Markdown table. Torch uses its default thread count (2 on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from bench_segment import cold_cli_seconds


def warm(path: str, weights: str | None, repeats: int) -> dict:
    from bvmesh import io
    from bvmesh.cine import segment_cine
    from bvmesh.pipeline import load_weights

    model, _ = load_weights(weights, "cpu")
    cine = io.load_cine(path)
    segment_cine(cine, model=model)  # warm-up
    totals, stages = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = segment_cine(cine, model=model)
        totals.append(time.perf_counter() - t0)
        stages.append(result.report["timings_s"])
    median = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    return {"frames": cine.n_frames, "total_s": statistics.median(totals), "stages_s": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cine")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    w = warm(args.cine, args.weights, args.repeats)
    wall, peak = cold_cli_seconds(args.cine, args.weights, args.repeats)
    n = w["frames"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"input: {args.cine} ({n} frames); medians of {args.repeats}\n")
    print("| measure | seconds | per frame |\n|---|---|---|")
    print(f"| segment_cine(), warm process, no writing | {w['total_s']:.1f} | {w['total_s'] / n:.2f} |")
    for stage in ("locate", "network", "postprocess"):
        s = w["stages_s"][stage]
        print(f"| - of which {stage} | {s:.1f} | {s / n:.2f} |")
    print(f"| `bvmesh segment` cold process, wall, all outputs | {wall:.1f} | {wall / n:.2f} |")
    print(f"\npeak resident memory of a cold `bvmesh segment`: {peak:.0f} MB")
    print(json.dumps({"frames": n, "warm": w, "cold_s": wall, "peak_mb": peak}))


if __name__ == "__main__":
    main()

"""Speed and memory of `bvmesh segment` on an ACDC-sized volume.

    python benchmarks/bench_segment.py INPUT.nii.gz [INPUT2 ...] [--weights W] [--repeats 5] [--workers 2]

Measures, with medians over ``--repeats``:
1. network inference alone (initialisation + propagation on the isotropic stack),
   in a warm process;
2. the whole `bvmesh segment` command (read, locate, segment, labels, mesh, qc, report)
   from a cold process, wall time, and its peak resident memory;
3. cohort throughput: all inputs (repeated to at least 10 cases) in one
   `bvmesh segment` call, seconds per case; again with ``--workers N`` for each N of
   ``--workers`` (default 2);
4. beside 1., a U-Net shaped like nnU-Net's 2D ACDC plan (benchmarks/nnunet_shaped.py,
   random weights) on the same volume's acquired slices, each padded to a multiple of 64
   (one window per slice, no mirroring: the least nnU-Net does; in its faster memory
   layout, as bvmesh's), and the ratio.
``--network-only`` measures 1. and 4. alone. Prints a Markdown table. Torch uses its
default thread count (2 on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str]) -> None:
    """Run a `bvmesh segment`; exit 3 or 4 (written, but a mesh gate or QC failed) still counts."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 3, 4):
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-500:]}")


def _child_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def network_seconds(path: str, weights: str | None, repeats: int) -> tuple[float, float, int]:
    """Median seconds of the network stage, and of the whole in-process segment()."""
    import bvmesh
    from bvmesh.pipeline import load_weights

    model, _ = load_weights(weights, "cpu")
    bvmesh.segment(path, model=model)  # warm-up
    net, total = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = bvmesh.segment(path, model=model)
        total.append(time.perf_counter() - t0)
        net.append(result.report["timings_s"]["network"])
    return statistics.median(net), statistics.median(total), result.grid.shape[0]


def nnunet_seconds(path: str, repeats: int) -> tuple[float, float, int]:
    """Median seconds of the nnU-Net-shaped U-Net on the input's acquired slices, its
    parameters (millions) and the number of slices."""
    import numpy as np
    import torch
    from nnunet_shaped import NnUNet2d, parameters_m

    from bvmesh import geometry, io

    vol = io.load(path)
    axis, _ = geometry.find_slice_axis(vol.spacing, vol.shape)
    slices = np.moveaxis(vol.data, axis, 0).astype(np.float32)
    slices = (slices - slices.mean()) / (slices.std() + 1e-6)
    h, w = (-(-n // 64) * 64 for n in slices.shape[1:])
    x = torch.zeros(len(slices), 1, h, w)
    x[:, 0, :slices.shape[1], :slices.shape[2]] = torch.from_numpy(slices)
    torch.manual_seed(0)
    net = NnUNet2d().eval()
    best = float("inf")
    # Each layout timed, the faster kept: bvmesh runs channels-last on a CPU, so the
    # comparison gives nnU-Net's network the same chance.
    for layout in (torch.contiguous_format, torch.channels_last):
        net = net.to(memory_format=layout)
        times = []
        with torch.inference_mode():
            net(x)  # warm-up
            for _ in range(repeats):
                t0 = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - t0)
        best = min(best, statistics.median(times))
    return best, parameters_m(net), len(slices)


def cold_cli_seconds(path: str, weights: str | None, repeats: int) -> tuple[float, float]:
    """Median wall seconds of `bvmesh segment` in a new process, and the peak RSS (MB)."""
    times = []
    peak = 0.0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "bvmesh", "segment", path, "-o", out, "--device", "cpu"]
            if weights:
                cmd += ["--weights", weights]
            t0 = time.perf_counter()
            _run(cmd)
            times.append(time.perf_counter() - t0)
            peak = max(peak, _child_peak_mb())
    return statistics.median(times), peak


def cohort_seconds_per_case(paths: list[str], weights: str | None,
                            workers: int = 1) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        links = []
        for i in range(max(10, len(paths))):
            src = Path(paths[i % len(paths)])
            link = Path(tmp) / f"case{i:03d}.nii.gz"
            link.symlink_to(src.resolve())
            links.append(str(link))
        cmd = [sys.executable, "-m", "bvmesh", "segment", *links, "-o", str(Path(tmp) / "out"),
               "--device", "cpu", "--workers", str(workers)]
        if weights:
            cmd += ["--weights", weights]
        t0 = time.perf_counter()
        _run(cmd)
        return (time.perf_counter() - t0) / len(links), len(links)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="*", default=[2],
                        help="also time the cohort with these --workers counts")
    parser.add_argument("--network-only", action="store_true",
                        help="only the network stage and the nnU-Net-shaped U-Net")
    parser.add_argument("--cold-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_only:
        return print(json.dumps(cold_cli_seconds(args.inputs[0], args.weights, args.repeats)))
    if not args.network_only:
        # From a process that has loaded nothing: a child's peak RSS counts the pages it
        # shares with its parent between fork and exec, so forking from this process once
        # torch and two networks are loaded would report their memory as bvmesh's.
        cmd = [sys.executable, __file__, args.inputs[0], "--repeats", str(args.repeats), "--cold-only"]
        done = subprocess.run(cmd + (["--weights", args.weights] if args.weights else []),
                              capture_output=True, text=True, check=True)
        cold, peak = json.loads(done.stdout.splitlines()[-1])
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # nnunet_shaped beside this file
    net, warm_total, depth = network_seconds(args.inputs[0], args.weights, args.repeats)
    nnunet, params, n_slices = nnunet_seconds(args.inputs[0], args.repeats)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"input: {args.inputs[0]} ({depth} isotropic stack slices, {n_slices} acquired); "
          f"medians of {args.repeats}\n")
    print("| measure | seconds |\n|---|---|")
    print(f"| network inference (init + propagation) | {net:.3f} |")
    print(f"| nnU-Net-shaped 2D U-Net ({params:.1f} M parameters), the {n_slices} acquired "
          f"slices, one window each, no mirroring | {nnunet:.3f} |")
    print(f"\nbvmesh network / nnU-Net-shaped network: {net / nnunet:.2f}")
    if args.network_only:
        return
    per_case, n = cohort_seconds_per_case(args.inputs, args.weights)
    per_case_w = {w: cohort_seconds_per_case(args.inputs, args.weights, w)[0] for w in args.workers}
    print("| measure | seconds |\n|---|---|")
    print(f"| segment() in a warm process, no writing | {warm_total:.3f} |")
    print(f"| `bvmesh segment` cold process, wall (all outputs) | {cold:.2f} |")
    print(f"| cohort of {n} cases, one call, per case | {per_case:.2f} |")
    for w, t in per_case_w.items():
        print(f"| the same cohort with `--workers {w}`, per case | {t:.2f} |")
    print(f"\npeak resident memory of a cold `bvmesh segment`: {peak:.0f} MB")
    print(json.dumps({"network_s": net, "nnunet_shaped_s": nnunet, "warm_segment_s": warm_total,
                      "cold_cli_s": cold,
                      "cohort_s_per_case": per_case, "peak_mb": peak,
                      "cohort_s_per_case_workers": per_case_w}))


if __name__ == "__main__":
    main()

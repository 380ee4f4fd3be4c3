"""Seconds per training iteration, float32 against bfloat16 autocast (median of repeats; not a test).

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [DATA_DIR] [--repeats 5] [--steps 10]

One iteration is what `bvmesh train` does each step: a batch of 8 for the initialisation
network, the propagation network and the locator, forward and backward, the optimiser
and the EMA update (``bvmesh.train.loop.Trainer.step``, the bundled recipe with
``--augment vendor``). DATA_DIR: image/label pairs as `bvmesh train` reads them (ACDC's
training folder); without it, six synthetic cases (bvmesh.testing phantoms). The step's
time does not depend on what the images show. The two precisions take turns, each timed
over ``--steps`` iterations after two to warm up; the table gives the median of
``--repeats`` such turns.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import timed  # noqa: E402

from bvmesh.labels import classes_present, parse_label_map  # noqa: E402
from bvmesh.train import TrainConfig  # noqa: E402
from bvmesh.train.data import find_cases, load_training_data  # noqa: E402
from bvmesh.train.loop import Trainer  # noqa: E402


def synthetic_cases(folder: Path) -> Path:
    """Six phantoms as image/label pairs, labelled with bvmesh's values 1-3 (M&Ms' map);
    their RV wall left unlabelled, as ACDC leaves it."""
    import nibabel as nib

    from bvmesh.labels import RV_MYO
    from bvmesh.testing import make_phantom, phantom_image

    for i in range(6):
        ph = make_phantom((1.6, 1.6, 8.0), det_sign=(-1) ** i, base_at_start=i % 3 > 0, truth=False)
        labels = np.where(ph.labels == RV_MYO, 0, ph.labels).astype(np.uint8)
        nib.save(nib.Nifti1Image(phantom_image(ph, seed=i), ph.affine), folder / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(labels, ph.affine), folder / f"case{i}_gt.nii.gz")
    return folder


def seconds_per_iteration(data: list, labels: str, classes: tuple[str, ...], run_dir: Path,
                          repeats: int, steps: int) -> dict[str, float]:
    """Median seconds per `Trainer.step` of each precision, the two taking turns."""
    trainers = {p: Trainer(TrainConfig(labels=labels, augment="vendor", precision=p,
                                       model={"classes": list(classes)}),
                           data, run_dir, torch.device("cpu"), {})
                for p in ("fp32", "bf16")}
    for trainer in trainers.values():  # warm up
        trainer.step()
        trainer.step()
    times: dict[str, list[float]] = {p: [] for p in trainers}
    for _ in range(repeats):
        for p, trainer in trainers.items():
            seconds, _ = timed(lambda trainer=trainer: [trainer.step() for _ in range(steps)], 1)
            times[p].append(seconds / steps)
    return {p: float(np.median(t)) for p, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", type=Path)
    ap.add_argument("--cases", type=int, default=10, help="cases of DATA to prepare")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        labels = "acdc" if args.data else "mnms"
        mapping = parse_label_map(labels)
        classes = classes_present(mapping)
        cases = find_cases(args.data or synthetic_cases(Path(tmp)))[:args.cases]
        data = load_training_data(cases, mapping, classes)
        med = seconds_per_iteration(data, labels, classes, Path(tmp), args.repeats, args.steps)
    flags = _cpu_flags()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
          f"({', '.join(flags) or 'no bf16 units'}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    print(f"data: {len(cases)} cases of {args.data or 'synthetic phantoms'}; medians of "
          f"{args.repeats} x {args.steps} iterations\n")
    print("| precision | seconds per iteration |\n|---|---|")
    for p, t in med.items():
        print(f"| {p} | {t:.3f} |")
    print(f"\nfp32 / bf16: {med['fp32'] / med['bf16']:.2f}")


def _cpu_flags() -> list[str]:
    """The CPU's bfloat16 units (Linux), as /proc/cpuinfo names them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    have = set(text.split())
    return [f for f in ("avx512_bf16", "amx_bf16") if f in have]


if __name__ == "__main__":
    main()

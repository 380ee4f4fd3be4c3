"""Compare training losses at equal training time on held-out ACDC subjects.

    python scripts/compare_losses.py DATA_DIR --seconds 420 [--fold 0] [--cache DIR]

Trains the initialisation network (with the locator, as `bvmesh train` does) once per
loss for the same wall-clock budget on the fold's training subjects, then scores 2D Dice
per class on every slice in the middle 2/3 of the heart of the held-out subjects (crops
centred on the labelled heart, no augmentation). Prints a Markdown table and JSON.
This isolates the loss: the same data, sampler seed, network and time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bvmesh.labels import classes_present, parse_label_map  # noqa: E402
from bvmesh.train import TrainConfig, Trainer, find_cases, held_out  # noqa: E402
from bvmesh.train.data import CROP, load_training_data  # noqa: E402


def dice_per_class(model, data, classes) -> dict[str, float]:
    m = (CROP - 128) // 2
    inter = np.zeros(len(classes))
    total = np.zeros(len(classes))
    model.eval()
    with torch.inference_mode():
        for p in data:
            lo, hi = int(round(p.apex / 6)), int(round(5 * p.apex / 6))
            img = torch.from_numpy(p.image[lo:hi + 1, m:m + 128, m:m + 128].astype(np.float32))
            pred = model(img[:, None])[-1].argmax(1).numpy()
            gt = p.onehot[:, lo:hi + 1, m:m + 128, m:m + 128].argmax(0)
            for k in range(len(classes)):
                a, b = pred == k + 1, gt == k + 1
                inter[k] += 2 * np.logical_and(a, b).sum()
                total[k] += a.sum() + b.sum()
    return {c: round(float(inter[k] / max(total[k], 1)), 4) for k, c in enumerate(classes)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--seconds", type=float, default=420)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mapping = parse_label_map("acdc")
    classes = classes_present(mapping)
    cfg0 = TrainConfig(fold=args.fold, network="init", iterations=100000,
                       model={"classes": list(classes)})
    train_cases, test_cases = held_out(find_cases(args.data), cfg0.fold, cfg0.folds, cfg0.seed)
    train = load_training_data(train_cases, mapping, classes, args.cache)
    test = load_training_data(test_cases, mapping, classes, args.cache)
    results = {}
    for loss in ("paper", "dice-ce"):
        # A fixed schedule length so both losses see the same learning rates per iteration.
        cfg = TrainConfig(**{**vars(cfg0), "loss": loss, "iterations": 600})
        trainer = Trainer(cfg, train, Path("/dev/null"), torch.device("cpu"), {})
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds and trainer.iteration < cfg.iterations:
            trainer.step()
        results[loss] = {"iterations": trainer.iteration,
                         "seconds": round(time.perf_counter() - t0),
                         "dice": dice_per_class(trainer.ema.init, test, classes)}
        print(loss, results[loss], flush=True)
    print("\n| loss | iterations | seconds | " + " | ".join(classes) + " |")
    print("|---|---|---|" + "---|" * len(classes))
    for loss, r in results.items():
        print(f"| {loss} | {r['iterations']} | {r['seconds']} | "
              + " | ".join(f"{r['dice'][c]:.3f}" for c in classes) + " |")
    print(json.dumps({"fold": args.fold, "held_out_cases": len(test), "results": results}))


if __name__ == "__main__":
    main()

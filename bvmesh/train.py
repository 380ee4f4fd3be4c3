"""Training: the paper's recipe for the initialisation and propagation networks (and the
heart locator), with checkpoints that resume and a self-describing weights file.

One iteration draws a batch for each network from the prepared cases:
- initialisation: a slice from the middle 2/3 of the labelled heart;
- propagation: slice z, its (degraded) mask and slices z+-1..z+-4, towards the base or
  the apex at random, targets the 4 next masks;
- locator: a whole coarse slice, target the heart.
Losses apply at every scale of each network. Weights are kept as an exponential moving
average (EMA), which is what gets saved for inference.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__, augment
from .dataset import Case, Prepared, find_cases, prepare, stratified_folds
from .errors import BvmeshError
from .labels import classes_present, parse_label_map
from .loss import LOSSES, dice_ce_loss
from .model import build_model, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved into every checkpoint)."""

    labels: str = "acdc"
    folds: int = 5
    fold: int | None = 0
    network: str = "both"  # init | prop | both
    iterations: int = 3000
    batch_size: int = 8
    lr: float = 2e-3
    loss: str = "dice-ce"
    ema: float = 0.995
    seed: int = 0
    checkpoint_every: int = 250
    threads: int = 0  # 0: torch's default
    augment: str = "standard"  # standard | vendor (adds augment.appearance)
    model: dict = field(default_factory=dict)


@dataclass
class Progress:
    iteration: int
    total: int
    losses: dict[str, float]
    rate: float


def held_out(cases: list[Case], cfg: TrainConfig) -> tuple[list[Case], list[Case]]:
    """(training cases, held-out cases) for the configured fold; all cases when fold is None."""
    if cfg.fold is None:
        return cases, []
    if not 0 <= cfg.fold < cfg.folds:
        raise BvmeshError(f"--fold {cfg.fold} is not in 0..{cfg.folds - 1}")
    test = set(stratified_folds(cases, cfg.folds, cfg.seed)[cfg.fold])
    return [c for c in cases if c.subject not in test], [c for c in cases if c.subject in test]


class Sampler:
    """Draws augmented training batches from prepared cases."""

    def __init__(self, data: list[Prepared], seed: int, vendor: bool = False) -> None:
        self.data, self.vendor = data, vendor
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def _look(self, images: torch.Tensor) -> torch.Tensor:
        out = augment.intensity(images, self.gen)
        return augment.appearance(out, self.gen) if self.vendor else out

    def _pick(self) -> Prepared:
        return self.data[self.rng.integers(len(self.data))]

    def init_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, labs = [], []
        for _ in range(n):
            p = self._pick()
            lo, hi = p.apex / 6, 5 * p.apex / 6
            s = int(round(self.rng.uniform(lo, hi)))
            imgs.append(p.image[s:s + 1])
            labs.append(p.onehot[:, s:s + 1].transpose(1, 0, 2, 3))
        img, lab = self._warp(imgs, labs, misalign=0.0)
        return self._look(img), lab[:, 0]

    def prop_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        imgs, labs = [], []
        for _ in range(n):
            p = self._pick()
            depth = p.image.shape[0]
            if self.rng.random() < 0.5:  # towards the apex
                z = int(self.rng.integers(0, max(1, min(p.apex, depth - 5) + 1)))
                idx = np.arange(z, z + 5)
            else:  # towards the base
                z = int(self.rng.integers(min(4, p.apex), p.apex + 1))
                idx = np.arange(z, z - 5, -1)
            idx = np.clip(idx, 0, depth - 1)
            imgs.append(p.image[idx])
            labs.append(p.onehot[:, idx].transpose(1, 0, 2, 3))
        img, lab = self._warp(imgs, labs, misalign=1.5)
        mask = augment.degrade_mask(lab[:, 0], self.gen)
        return self._look(img), mask, lab[:, 1:]

    def locator_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, masks = [], []
        for _ in range(n):
            p = self._pick()
            s = int(self.rng.integers(p.loc_image.shape[0]))
            imgs.append(p.loc_image[s])
            masks.append(p.loc_mask[s])
        img = torch.from_numpy(np.stack(imgs).astype(np.float32))[:, None]
        m = torch.from_numpy(np.stack(masks).astype(np.float32))
        lab = torch.stack([1 - m, m], 1)[:, None]
        img, lab = augment.warp(img, lab, self.gen, out=128, scale=(0.8, 1.25), shift_px=10,
                                elastic=0.0)
        return self._look(img), (lab[:, 0] > 0.5).float()

    def _warp(self, imgs: list, labs: list, misalign: float):
        img = torch.from_numpy(np.stack(imgs).astype(np.float32))
        lab = torch.from_numpy(np.stack(labs).astype(np.float32) / 255.0)
        return augment.warp(img, lab, self.gen, misalign_px=misalign)


def _multiscale(loss_fn: Callable, outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """The loss at every scale, against the target averaged down to that scale."""
    total = outputs[0].new_zeros(())
    for out in outputs:
        size = out.shape[-1]
        t = target if target.shape[-1] == size else F.interpolate(
            target.flatten(0, -4) if target.dim() > 4 else target, size=(size, size), mode="area"
        ).view(*target.shape[:-2], size, size)
        total = total + loss_fn(out.flatten(0, -4), t.flatten(0, -4))
    return total


class Trainer:
    """One training run: model, EMA copy, optimisers, sampler, and its folder."""

    def __init__(self, cfg: TrainConfig, data: list[Prepared], run_dir: Path, device: torch.device,
                 record: dict) -> None:
        self.cfg, self.run_dir, self.device, self.record = cfg, run_dir, device, record
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model).to(device)
        self.ema = copy.deepcopy(self.model)
        self.nets = {"locator": self.model.locator}
        if cfg.network in ("init", "both"):
            self.nets["init"] = self.model.init
        if cfg.network in ("prop", "both"):
            self.nets["prop"] = self.model.prop
        params = [p for net in self.nets.values() for p in net.parameters()]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
        self.sampler = Sampler(data, cfg.seed, vendor=cfg.augment == "vendor")
        self.loss_fn = LOSSES[cfg.loss]
        self.iteration = 0

    def lr_at(self, it: int) -> float:
        warm = min(1.0, (it + 1) / 100)
        # A plain float: a numpy scalar in the optimiser state would make last.pt unloadable
        # with weights_only=True.
        return float(self.cfg.lr * warm * 0.5 * (1 + np.cos(np.pi * min(1.0, it / self.cfg.iterations))))

    def step(self) -> dict[str, float]:
        b, dev = self.cfg.batch_size, self.device
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.iteration)
        for net in self.nets.values():
            net.train()
        losses: dict[str, torch.Tensor] = {}
        if "init" in self.nets:
            img, lab = self.sampler.init_batch(b)
            losses["init"] = _multiscale(self.loss_fn, self.model.init(img.to(dev)), lab.to(dev))
        if "prop" in self.nets:
            img, mask, lab = self.sampler.prop_batch(b)
            out = self.model.prop(img.to(dev), mask.to(dev))
            losses["prop"] = _multiscale(self.loss_fn, out, lab.to(dev))
        img, lab = self.sampler.locator_batch(b)
        losses["locator"] = dice_ce_loss(self.model.locator(img.to(dev)), lab.to(dev))
        self.opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        self.opt.step()
        self._update_ema()
        self.iteration += 1
        return {k: v.item() for k, v in losses.items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = min(self.cfg.ema, (1 + self.iteration) / (10 + self.iteration))
        for name in ("init", "prop", "locator"):
            src, dst = getattr(self.model, name), getattr(self.ema, name)
            for pe, p in zip(dst.parameters(), src.parameters()):
                pe.lerp_(p, 1 - d)
            for be, bsrc in zip(dst.buffers(), src.buffers()):
                be.copy_(bsrc)

    def save(self) -> None:
        state = {"iteration": self.iteration, "model": self.model.state(), "ema": self.ema.state(),
                 "opt": self.opt.state_dict(), "torch_rng": torch.get_rng_state(),
                 "gen": self.sampler.gen.get_state(),
                 "np_rng": json.dumps(self.sampler.rng.bit_generator.state),
                 "config": json.dumps(asdict(self.cfg))}
        from .io import atomic_write

        atomic_write(self.run_dir / "last.pt", lambda tmp: torch.save(state, tmp))
        record = {**self.record, "iterations": self.iteration}
        self.ema.record = record
        save_checkpoint(self.ema, self.run_dir / "model.pt", record)

    def resume(self) -> None:
        state = torch.load(self.run_dir / "last.pt", map_location=self.device, weights_only=True)
        saved = json.loads(state["config"])
        current = asdict(self.cfg)
        changed = sorted(k for k in current if k != "iterations" and saved.get(k) != current[k])
        if changed:
            raise BvmeshError(f"{self.run_dir}: --resume with a different configuration "
                              f"({', '.join(changed)}) "
                              "than the run was started with; use a new -o folder")
        if saved["iterations"] != current["iterations"]:
            log.warning("resuming with %d instead of %d iterations: the learning-rate schedule "
                        "stretches from here on", current["iterations"], saved["iterations"])
        self.iteration = int(state["iteration"])
        for target, key in ((self.model, "model"), (self.ema, "ema")):
            for name in ("init", "prop", "locator"):
                getattr(target, name).load_state_dict(state[key][name])
        self.opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        self.sampler.gen.set_state(state["gen"])
        self.sampler.rng.bit_generator.state = json.loads(state["np_rng"])


def load_training_data(cases: list[Case], mapping: dict[int, str], classes: tuple[str, ...],
                       cache: Path | None = None,
                       on_case: Callable[[int, int], None] | None = None) -> list[Prepared]:
    """Prepare every case (reusing ``cache`` npz files when present)."""
    out = []
    for i, case in enumerate(cases):
        path = cache / f"{case.name}.npz" if cache else None
        if path and path.exists():
            z = np.load(path)
            out.append(Prepared(case.name, z["image"], z["onehot"], int(z["apex"]),
                                z["loc_image"], z["loc_mask"]))
        else:
            p = prepare(case, mapping, classes)
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, image=p.image, onehot=p.onehot, apex=p.apex, loc_image=p.loc_image,
                         loc_mask=p.loc_mask)
            out.append(p)
        if on_case:
            on_case(i + 1, len(cases))
    return out


def fingerprint(cases: list[Case]) -> str:
    """A short hash of the training file names and sizes: which data made these weights."""
    import hashlib

    h = hashlib.sha256()
    for c in cases:
        for p in (c.image, c.label):
            h.update(f"{p.name}:{p.stat().st_size};".encode())
    return h.hexdigest()[:16]


def run(data_dir: str | Path, run_dir: str | Path, cfg: TrainConfig, *, device: torch.device,
        resume: bool = False, on_progress: Callable[[Progress], None] | None = None,
        on_case: Callable[[int, int], None] | None = None, cache_dir: Path | None = None) -> Path:
    """Train one model; returns the path of its weights file (``run_dir/model.pt``)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise BvmeshError(f"{run_dir}: exists and is not a folder; choose another -o")
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mapping = parse_label_map(cfg.labels)
    classes = classes_present(mapping)
    cfg.model = {**cfg.model, "classes": list(classes)}
    cases = find_cases(data_dir)
    train_cases, test_cases = held_out(cases, cfg)
    record = {"bvmesh_version": __version__, "data": Path(data_dir).name, "cases": len(train_cases),
              "held_out_subjects": sorted({c.subject for c in test_cases}),
              "data_fingerprint": fingerprint(train_cases), "train_config": asdict(cfg),
              "device": str(device)}
    data = load_training_data(train_cases, mapping, classes, cache_dir, on_case)
    trainer = Trainer(cfg, data, run_dir, device, record)
    log_path = run_dir / "losses.csv"
    if resume and (run_dir / "last.pt").exists():
        trainer.resume()
    elif log_path.exists():
        log_path.unlink()
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2), encoding="utf-8")
    start, t0 = trainer.iteration, time.perf_counter()
    with log_path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if start == 0:
            writer.writerow(["iteration", "seconds", "lr", "init", "prop", "locator"])
        while trainer.iteration < cfg.iterations:
            losses = trainer.step()
            elapsed = time.perf_counter() - t0
            writer.writerow([trainer.iteration, f"{elapsed:.1f}", f"{trainer.lr_at(trainer.iteration):.2e}",
                             *(f"{losses.get(k, float('nan')):.5f}" for k in ("init", "prop", "locator"))])
            if trainer.iteration % cfg.checkpoint_every == 0 or trainer.iteration == cfg.iterations:
                fh.flush()
                trainer.save()
            if on_progress:
                on_progress(Progress(trainer.iteration, cfg.iterations, losses,
                                     (trainer.iteration - start) / max(elapsed, 1e-9)))
    if trainer.iteration == start:  # nothing to do (already finished): still leave weights
        trainer.save()
    plot_losses(log_path, run_dir / "losses.png")
    return run_dir / "model.pt"


def plot_losses(csv_path: Path, png_path: Path) -> None:
    """Loss curves (running mean over 50 iterations), one line per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    if not rows:
        return
    it = np.array([int(r["iteration"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("init", "prop", "locator"):
        y = np.array([float(r[key]) for r in rows])
        if np.all(np.isnan(y)):
            continue
        k = min(50, len(y))
        ax.plot(it[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (sum over scales)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)

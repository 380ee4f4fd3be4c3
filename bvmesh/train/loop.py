"""The training loop: the paper's recipe for the initialisation and propagation networks
(and the heart locator), with checkpoints that resume and a self-describing weights file.

One iteration draws a batch for each network (:mod:`bvmesh.train.sampler`); losses apply
at every scale of each network. Weights are kept as an exponential moving average (EMA),
which is what gets saved for inference.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import BvmeshError
from ..labels import classes_present, parse_label_map
from ..model import build_model, save_checkpoint
from .config import RESUMABLE_CHANGES, TrainConfig
from .data import Prepared, find_cases, fingerprint, held_out, load_training_data
from .distributed import World, barrier, gather, joined, mean, wrap
from .loss import LOSSES, dice_ce_loss, multiscale
from .sampler import Sampler

log = logging.getLogger(__name__)


@dataclass
class Progress:
    iteration: int
    total: int
    losses: dict[str, float]
    rate: float


class Trainer:
    """One training run in one process: model, EMA copy, optimiser, sampler, its folder.

    In a run of several processes (torchrun) each has a Trainer with the same model and
    its own sampler; ``world.main`` writes the checkpoints.
    """

    def __init__(self, cfg: TrainConfig, data: list[Prepared], run_dir: Path, device: torch.device,
                 record: dict, world: World = World()) -> None:
        self.cfg, self.run_dir, self.device, self.record = cfg, run_dir, device, record
        self.world = world
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        self.model = build_model(cfg.model).to(device)
        self.ema = copy.deepcopy(self.model)
        names = ["locator"] + [n for n in ("init", "prop") if cfg.network in (n, "both")]
        self.nets = {n: getattr(self.model, n) for n in names}
        # What the forward passes go through: gradients averaged over the processes.
        self.forward = {n: wrap(net, world, device) for n, net in self.nets.items()}
        params = [p for net in self.nets.values() for p in net.parameters()]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
        torch.manual_seed(world.seed(cfg.seed))  # the networks' noise layers differ per process
        self.sampler = Sampler(data, world.seed(cfg.seed), vendor=cfg.augment == "vendor")
        self.loss_fn = LOSSES[cfg.loss]
        self.iteration = 0

    def lr_at(self, it: int) -> float:
        warm = min(1.0, (it + 1) / 100)
        # A plain float: a numpy scalar in the optimiser state would make last.pt unloadable
        # with weights_only=True.
        return float(self.cfg.lr * warm * 0.5 * (1 + np.cos(np.pi * min(1.0, it / self.cfg.iterations))))

    def step(self) -> dict[str, float]:
        """One iteration; returns each network's loss (the mean over the processes)."""
        b, dev = self.cfg.batch_size, self.device
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.iteration)
        for net in self.nets.values():
            net.train()
        losses: dict[str, torch.Tensor] = {}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
            if "init" in self.nets:
                img, lab = self.sampler.init_batch(b)
                losses["init"] = multiscale(self.loss_fn, self.forward["init"](img.to(dev)),
                                            lab.to(dev))
            if "prop" in self.nets:
                img, mask, lab = self.sampler.prop_batch(b)
                out = self.forward["prop"](img.to(dev), mask.to(dev))
                losses["prop"] = multiscale(self.loss_fn, out, lab.to(dev))
            img, lab = self.sampler.locator_batch(b)
            losses["locator"] = dice_ce_loss(self.forward["locator"](img.to(dev)), lab.to(dev))
        self.opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        self.opt.step()
        self._update_ema()
        self.iteration += 1
        return mean({k: v.item() for k, v in losses.items()}, self.world, dev)

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = min(self.cfg.ema, (1 + self.iteration) / (10 + self.iteration))
        for name in ("init", "prop", "locator"):
            src, dst = getattr(self.model, name), getattr(self.ema, name)
            for pe, p in zip(dst.parameters(), src.parameters()):
                pe.lerp_(p, 1 - d)
            for be, bsrc in zip(dst.buffers(), src.buffers()):
                be.copy_(bsrc)

    def _draws(self) -> dict:
        """This process's random state: what it draws next."""
        return {"torch_rng": torch.get_rng_state(), "gen": self.sampler.gen.get_state(),
                "np_rng": json.dumps(self.sampler.rng.bit_generator.state)}

    def save(self) -> None:
        """last.pt (to resume) and model.pt (the EMA weights); every process must call it."""
        draws = gather(self._draws(), self.world)
        if not self.world.main:
            return
        state = {"iteration": self.iteration, "model": self.model.state(), "ema": self.ema.state(),
                 "opt": self.opt.state_dict(), **draws[0], "other_ranks": draws[1:],
                 "config": json.dumps(asdict(self.cfg))}
        from ..io import atomic_write

        atomic_write(self.run_dir / "last.pt", lambda tmp: torch.save(state, tmp))
        record = {**self.record, "iterations": self.iteration}
        self.ema.record = record
        save_checkpoint(self.ema, self.run_dir / "model.pt", record)

    def resume(self) -> None:
        state = torch.load(self.run_dir / "last.pt", map_location=self.device, weights_only=True)
        saved = json.loads(state["config"])
        current, default = asdict(self.cfg), asdict(TrainConfig())
        # A field added since the run started had its default value in that run.
        changed = sorted(k for k in current
                         if k not in RESUMABLE_CHANGES and saved.get(k, default[k]) != current[k])
        if changed:
            hint = " (world_size: the number of processes)" if "world_size" in changed else ""
            raise BvmeshError(f"{self.run_dir}: resuming with a different configuration "
                              f"({', '.join(changed)}){hint} than the run was started with; "
                              "use a new run folder")
        if saved["iterations"] != current["iterations"]:
            log.warning("resuming with %d instead of %d iterations: the learning-rate schedule "
                        "stretches from here on", current["iterations"], saved["iterations"])
        self.iteration = int(state["iteration"])
        for target, key in ((self.model, "model"), (self.ema, "ema")):
            for name in ("init", "prop", "locator"):
                getattr(target, name).load_state_dict(state[key][name])
        self.opt.load_state_dict(state["opt"])
        draws = state if self.world.main else state["other_ranks"][self.world.rank - 1]
        torch.set_rng_state(draws["torch_rng"].cpu())
        self.sampler.gen.set_state(draws["gen"].cpu())
        self.sampler.rng.bit_generator.state = json.loads(draws["np_rng"])


def train(data_dir: str | Path, run_dir: str | Path, cfg: TrainConfig, *,
          device: torch.device | str = "cpu", resume: bool = False,
          on_progress: Callable[[Progress], None] | None = None,
          on_case: Callable[[int, int], None] | None = None,
          cache_dir: str | Path | None = None) -> Path:
    """Train one model (in every process torchrun started, when it did); returns the path
    of its weights file (``run_dir/model.pt``)."""
    cfg.check()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise BvmeshError(f"{run_dir}: exists and is not a folder; choose another run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with joined(torch.device(device)) as (world, device):
        cfg.world_size = world.size
        trainer = _trainer(data_dir, run_dir, cfg, device, world, on_case,
                           None if cache_dir is None else Path(cache_dir))
        log_path = run_dir / "losses.csv"
        if resume and (run_dir / "last.pt").exists():
            trainer.resume()
        if world.main:
            _start_log(log_path, trainer.iteration)
            (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2), encoding="utf-8")
        _loop(trainer, log_path, on_progress if world.main else None)
        if world.main:
            plot_losses(log_path, run_dir / "losses.png")
        barrier(world)  # no process leaves before the weights are written
    return run_dir / "model.pt"


def _trainer(data_dir, run_dir: Path, cfg: TrainConfig, device: torch.device, world: World,
             on_case, cache_dir: Path | None) -> Trainer:
    mapping = parse_label_map(cfg.labels)
    classes = classes_present(mapping)
    cfg.model = {**cfg.model, "classes": list(classes)}
    train_cases, test_cases = held_out(find_cases(data_dir), cfg.fold, cfg.folds, cfg.seed)
    record = {"bvmesh_version": __version__, "data": Path(data_dir).name, "cases": len(train_cases),
              "held_out_subjects": sorted({c.subject for c in test_cases}),
              "data_fingerprint": fingerprint(train_cases), "train_config": asdict(cfg),
              "device": str(device)}
    if not world.main and cache_dir is not None:
        barrier(world)  # the cache is filled by the main process; the others read it
    data = load_training_data(train_cases, mapping, classes, cache_dir,
                              on_case if world.main else None)
    if world.main and cache_dir is not None:
        barrier(world)
    return Trainer(cfg, data, run_dir, device, record, world)


LOG_COLUMNS = ["iteration", "seconds", "lr", "init", "prop", "locator"]


def _start_log(path: Path, iteration: int) -> None:
    """losses.csv holding exactly the iterations up to ``iteration`` (those logged after the
    last checkpoint of an interrupted run are dropped: they are trained again)."""
    rows = list(csv.reader(path.open(newline="", encoding="utf-8"))) if path.exists() else []
    kept = [r for r in rows[1:] if r and int(r[0]) <= iteration] if iteration else []
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([LOG_COLUMNS, *kept])


def _loop(trainer: Trainer, log_path: Path, on_progress) -> None:
    cfg, main = trainer.cfg, trainer.world.main
    start, t0 = trainer.iteration, time.perf_counter()
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(log_path.open("a", newline="", encoding="utf-8")) if main else None
        writer = csv.writer(fh) if fh else None
        while trainer.iteration < cfg.iterations:
            losses = trainer.step()
            elapsed = time.perf_counter() - t0
            if writer:
                writer.writerow([trainer.iteration, f"{elapsed:.1f}",
                                 f"{trainer.lr_at(trainer.iteration):.2e}",
                                 *(f"{losses.get(k, float('nan')):.5f}" for k in LOG_COLUMNS[3:])])
            if trainer.iteration % cfg.checkpoint_every == 0 or trainer.iteration == cfg.iterations:
                if fh:
                    fh.flush()  # the log holds what the checkpoint holds
                trainer.save()
            if on_progress:
                on_progress(Progress(trainer.iteration, cfg.iterations, losses,
                                     (trainer.iteration - start) / max(elapsed, 1e-9)))
    if trainer.iteration == start:  # nothing to do (already finished): still leave weights
        trainer.save()


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

"""What defines a training run: :class:`TrainConfig` (saved into every checkpoint) and the
rules its values must follow."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BvmeshError

NETWORKS = ("init", "prop", "both")
AUGMENTATIONS = ("standard", "vendor")  # vendor adds augment.appearance
#: fp32, or bf16: the forward passes autocast to bfloat16 (weights, optimiser and EMA stay
#: float32). bf16 needs hardware that has it (CUDA from Ampere; CPUs with AMX or
#: AVX512-BF16, where a training iteration took 1.5-1.6x less time: benchmarks/README.md);
#: elsewhere it is emulated and slower.
PRECISIONS = ("fp32", "bf16")


class ConfigError(BvmeshError):
    """A training configuration value that is not one of the allowed ones (bad usage)."""

    exit_code = 2


# Fields a resumed run may change: how long and how it runs, not what it learns.
RESUMABLE_CHANGES = ("iterations", "checkpoint_every", "threads")


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
    precision: str = "fp32"  # fp32 | bf16 (PRECISIONS)
    model: dict = field(default_factory=dict)
    world_size: int = 1  # processes it trains in (torchrun); each draws batch_size samples

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first value that is not allowed."""
        from .loss import LOSSES

        for name, allowed in (("network", NETWORKS), ("loss", tuple(LOSSES)),
                              ("augment", AUGMENTATIONS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} {getattr(self, name)!r}: use {' or '.join(allowed)}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ConfigError(f"fold {self.fold}: the folds are 0..{self.folds - 1}")


def fold_plan(spec: str | None, cfg: TrainConfig) -> list[int | None]:
    """The folds a run trains: a number, ``all`` (each in turn), ``none`` (all data, no
    fold held out) or None (the configuration's own fold)."""
    if spec is None:
        return [cfg.fold]
    if spec == "all":
        return list(range(cfg.folds))
    if spec == "none":
        return [None]
    try:
        fold = int(spec)
    except ValueError:
        raise ConfigError(f"fold {spec!r}: a fold number, 'all' or 'none'") from None
    if not 0 <= fold < cfg.folds:
        raise ConfigError(f"fold {spec}: the folds are 0..{cfg.folds - 1}")
    return [fold]

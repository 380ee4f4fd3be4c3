"""Training: the paper's recipe on folders of image/label pairs, in one process or many.

- :mod:`.config`: :class:`TrainConfig`, what defines a run, and the fold plan;
- :mod:`.data`: image/label pairs, subject folds, cases prepared as inference sees them;
- :mod:`.augment` and :mod:`.sampler`: augmented batches for each network;
- :mod:`.loss`: the paper's stabilised class-balanced cross entropy, and Dice + CE;
- :mod:`.loop`: the loop, checkpoints and resume; :mod:`.distributed`: torchrun.
"""

from .config import ConfigError, TrainConfig, fold_plan
from .data import Case, Prepared, find_cases, held_out, stratified_folds
from .loop import Progress, Trainer, plot_losses, train

__all__ = ["ConfigError", "TrainConfig", "fold_plan", "Case", "Prepared", "find_cases",
           "held_out", "stratified_folds", "Progress", "Trainer", "plot_losses", "train"]

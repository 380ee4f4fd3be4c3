"""`bvmesh train`: the paper's recipe on a folder of image/label pairs."""

from __future__ import annotations

from pathlib import Path

import typer

from .console import device_option, err, exit_on_error, out, setup_logging


def _load_config(path: Path | None) -> dict:
    if path is None:
        return {}
    import tomllib

    from ..errors import InputError

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: cannot read the training config ({exc})") from exc


def train_command(
    data_dir: Path = typer.Argument(..., help="Folder of image/label pairs (X.nii.gz beside "
                                    "X_gt.nii.gz, or images/ + labels/)."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (checkpoints, logs)."),
    labels: str = typer.Option(None, "--labels", help="Label map of the data: acdc, mnms, "
                               "binary, bvmesh, or '1=rv_pool,2=lv_myo,...'. Default: acdc."),
    folds: int = typer.Option(None, "--folds", help="Number of cross-validation folds (default 5)."),
    fold: str = typer.Option(None, "--fold", help="Fold to hold out (0-based), 'all' to run "
                             "every fold in sequence, 'none' to train on all data."),
    network: str = typer.Option(None, "--network", help="init, prop or both (default)."),
    iterations: int = typer.Option(None, "--iterations", help="Training iterations."),
    batch_size: int = typer.Option(None, "--batch-size", help="Samples per network per iteration."),
    loss: str = typer.Option(None, "--loss", help="paper (the paper's stabilised class-balanced "
                             "cross entropy) or dice-ce."),
    augment: str = typer.Option(None, "--augment", help="standard (default) or vendor: adds "
                                "resolution, blur, noise and window changes seen across scanners."),
    precision: str = typer.Option(None, "--precision", help="fp32 (default) or bf16: forward "
                                  "passes in bfloat16, faster where the hardware has it (CUDA "
                                  "GPUs from Ampere, CPUs with AMX or AVX512-BF16)."),
    device: str = typer.Option("auto", "--device", callback=device_option,
                               help="auto, cpu, cuda[:N] or mps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUTPUT."),
    config: Path = typer.Option(None, "--config", help="TOML file with TrainConfig fields; "
                                "command-line options override it."),
    cache_dir: Path = typer.Option(None, "--data-cache", help="Keep prepared cases here "
                                   "(faster restarts)."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Train the initialisation and propagation networks; writes OUTPUT/model.pt.

    Several processes: torchrun --standalone --nproc-per-node N -m bvmesh train ...
    """
    setup_logging(verbose)
    with exit_on_error():
        from dataclasses import fields

        from ..errors import InputError
        from ..train import ConfigError, TrainConfig, fold_plan

        values = _load_config(config)
        known = {f.name for f in fields(TrainConfig)}
        if set(values) - known:
            raise InputError(f"{config}: unknown keys {sorted(set(values) - known)}; "
                             f"known: {sorted(known)}")
        given = {"labels": labels, "folds": folds, "network": network, "iterations": iterations,
                 "batch_size": batch_size, "loss": loss, "augment": augment,
                 "precision": precision}
        values.update({k: v for k, v in given.items() if v is not None})
        try:
            cfg = TrainConfig(**values)
            todo = fold_plan(fold, cfg)
            cfg.check()
        except ConfigError as exc:  # a value the options do not allow: bad usage
            raise typer.BadParameter(f"--{exc}") from None
        for k in todo:
            run_dir = output / f"fold{k}" if len(todo) > 1 else output
            _train_one(data_dir, run_dir, TrainConfig(**{**vars(cfg), "fold": k}), device, resume,
                       cache_dir)


def _train_one(data_dir, run_dir, cfg, device, resume, cache_dir) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..networks import select_device
    from ..train import train
    from ..train.distributed import world_from_env

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    fold = "all data" if cfg.fold is None else f"fold {cfg.fold}/{cfg.folds}"
    main = world_from_env().main  # under torchrun, one process reports
    with Progress(*columns, console=err, disable=not main) as bar:
        prep = bar.add_task(f"preparing cases ({fold})", total=None, info="")
        task = bar.add_task(f"training ({fold})", total=cfg.iterations, info="", visible=False)

        def on_case(i: int, n: int) -> None:
            bar.update(prep, completed=i, total=n)

        def on_progress(p) -> None:
            losses = " ".join(f"{k} {v:.3f}" for k, v in p.losses.items())
            bar.update(task, completed=p.iteration, visible=True,
                       info=f"{losses} | {p.rate:.2f} it/s")

        path = train(data_dir, run_dir, cfg, device=select_device(device), resume=resume,
                     on_progress=on_progress, on_case=on_case, cache_dir=cache_dir)
    if main:
        out.print(f"weights: {path}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)

"""Training: data discovery, stratified subject folds, a short run, and bit-exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, save_nifti

from bvmesh.model import load_model
from bvmesh.testing import make_phantom
from bvmesh.train import TrainConfig, train
from bvmesh.train.data import Case, find_cases, stratified_folds

ACDC_OF_BVMESH = np.array([0, 3, 2, 1, 0], np.uint8)  # bvmesh label -> ACDC label


@pytest.fixture(scope="module")
def acdc_like(tmp_path_factory) -> Path:
    """Three subjects in ACDC's layout (patientNNN/patientNNN_frameXX[_gt].nii.gz + Info.cfg)."""
    root = tmp_path_factory.mktemp("acdc")
    for n, (det, base_at_start) in enumerate([(1, True), (-1, False), (1, False)], start=1):
        folder = root / f"patient{n:03d}"
        folder.mkdir()
        (folder / "Info.cfg").write_text(f"ED: 1\nES: 5\nGroup: {'NOR' if n < 3 else 'DCM'}\n")
        ph = make_phantom((1.6, 1.6, 8.0), det_sign=det, base_at_start=base_at_start, truth=False)
        image = np.where(np.isin(ph.labels, (1, 3)), 200.0, np.where(ph.labels > 0, 80.0, 20.0))
        for frame in (1, 5):
            stem = folder / f"patient{n:03d}_frame{frame:02d}"
            save_nifti(image.astype(np.float32), ph.affine, stem.with_name(stem.name + ".nii.gz"))
            save_nifti(ACDC_OF_BVMESH[ph.labels], ph.affine, stem.with_name(stem.name + "_gt.nii.gz"))
    return root


def test_find_cases_pairs_images_with_labels_and_reads_groups(acdc_like):
    cases = find_cases(acdc_like)
    assert len(cases) == 6
    assert {c.subject for c in cases} == {"patient001", "patient002", "patient003"}
    assert all(c.label.name == c.image.name.replace(".nii.gz", "_gt.nii.gz") for c in cases)
    assert {c.group for c in cases} == {"NOR", "DCM"}


def test_folds_split_subjects_and_spread_each_group():
    cases = [Case(f"s{i}_f{f}", Path("x"), Path("y"), f"s{i:02d}", group)
             for group, rng in (("A", range(0, 10)), ("B", range(10, 20))) for i in rng
             for f in (1, 2)]
    folds = stratified_folds(cases, 5, seed=3)
    assert sorted(s for f in folds for s in f) == sorted({c.subject for c in cases})
    for fold in folds:
        groups = [s for s in fold if int(s[1:]) < 10]
        assert len(groups) == 2 and len(fold) == 4  # 2 of each group in every fold


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(labels="acdc", folds=3, fold=0, iterations=4, batch_size=2,
                                 checkpoint_every=2, threads=1, model=dict(TINY_CONFIG)), **kw})


def test_a_short_run_writes_usable_self_describing_weights(acdc_like, tmp_path):
    path = train(acdc_like, tmp_path / "run", _config(), device=torch.device("cpu"))
    model = load_model(path)
    assert model.classes == ("lv_pool", "lv_myo", "rv_pool")
    assert model.record["iterations"] == 4
    assert len(model.record["held_out_subjects"]) == 1
    assert (tmp_path / "run" / "losses.png").stat().st_size > 0
    assert len((tmp_path / "run" / "losses.csv").read_text().splitlines()) == 5


def test_resume_continues_bit_for_bit(acdc_like, tmp_path):
    straight = train(acdc_like, tmp_path / "a", _config(), device=torch.device("cpu"))

    class Stop(Exception):
        pass

    def stop_at_two(progress):
        if progress.iteration == 2:
            raise Stop

    with pytest.raises(Stop):
        train(acdc_like, tmp_path / "b", _config(), device=torch.device("cpu"), on_progress=stop_at_two)
    resumed = train(acdc_like, tmp_path / "b", _config(), device=torch.device("cpu"), resume=True)
    a, b = load_model(straight).state(), load_model(resumed).state()
    for net in a:
        for name, tensor in a[net].items():
            assert torch.equal(tensor, b[net][name]), f"{net}.{name} differs after resume"


def test_resume_refuses_a_different_recipe(acdc_like, tmp_path):
    from bvmesh.errors import BvmeshError

    train(acdc_like, tmp_path / "c", _config(), device=torch.device("cpu"))
    with pytest.raises(BvmeshError, match="different configuration"):
        train(acdc_like, tmp_path / "c", _config(loss="paper"), device=torch.device("cpu"), resume=True)


def test_resume_may_change_threads_and_length(acdc_like, tmp_path):
    train(acdc_like, tmp_path / "d", _config(), device=torch.device("cpu"))
    longer = train(acdc_like, tmp_path / "d", _config(iterations=6, threads=2, checkpoint_every=3),
                   device=torch.device("cpu"), resume=True)
    assert load_model(longer).record["iterations"] == 6


def test_vendor_appearance_keeps_shape_and_range_and_changes_the_look():
    from bvmesh.train import augment

    images = torch.rand(6, 5, 64, 64)
    a = augment.appearance(images, torch.Generator().manual_seed(1))
    b = augment.appearance(images, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.2
    changed = [(a[i] - images[i]).abs().mean().item() > 1e-3 for i in range(6)]
    assert any(changed)
    # The blur keeps a flat image flat (normalised kernel, replicated edges).
    blurred = augment._blur(torch.ones(1, 3, 16, 16), 1.5)
    torch.testing.assert_close(blurred, torch.ones(1, 3, 16, 16))


def test_vendor_augmentation_is_recorded_in_the_weights(acdc_like, tmp_path):
    path = train(acdc_like, tmp_path / "v", _config(augment="vendor"), device=torch.device("cpu"))
    assert load_model(path).record["train_config"]["augment"] == "vendor"


def test_bf16_trains_in_bfloat16_and_keeps_float32_weights(acdc_like, tmp_path):
    fp32 = load_model(train(acdc_like, tmp_path / "fp32", _config(), device=torch.device("cpu")))
    bf16 = load_model(train(acdc_like, tmp_path / "bf16", _config(precision="bf16"),
                            device=torch.device("cpu")))
    assert bf16.record["train_config"]["precision"] == "bf16"
    weights = bf16.state()["init"]
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    # Same seed, same batches: only the arithmetic differs, and it shows in the weights.
    assert any(not torch.equal(t, fp32.state()["init"][k]) for k, t in weights.items())
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_an_unknown_precision_is_refused():
    from bvmesh.train import ConfigError

    with pytest.raises(ConfigError, match="precision 'fp16'"):
        _config(precision="fp16").check()


def _torchrun(args: list[str], cwd) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m bvmesh train ...`: two CPU processes
    on 127.0.0.1 (gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "bvmesh", "train", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_trains_in_two_processes_and_resumes(acdc_like, tmp_path):
    config = tmp_path / "tiny.toml"
    widths = ", ".join(f"{k} = {v}" for k, v in TINY_CONFIG.items())
    config.write_text(f"folds = 3\nbatch_size = 2\ncheckpoint_every = 2\nthreads = 1\n"
                      f"model = {{ {widths} }}\n")
    run = tmp_path / "run"
    args = [str(acdc_like), "-o", str(run), "--config", str(config), "--device", "cpu"]
    first = _torchrun([*args, "--iterations", "4"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert load_model(run / "model.pt").record["train_config"]["world_size"] == 2
    state = torch.load(run / "last.pt", weights_only=True)
    assert len(state["other_ranks"]) == 1  # each process keeps its own draws
    assert not torch.equal(state["gen"], state["other_ranks"][0]["gen"])  # and drew others

    again = _torchrun([*args, "--iterations", "6", "--resume"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert load_model(run / "model.pt").record["iterations"] == 6
    logged = [int(r.split(",")[0]) for r in (run / "losses.csv").read_text().splitlines()[1:]]
    assert logged == [1, 2, 3, 4, 5, 6]

    from bvmesh.errors import BvmeshError

    with pytest.raises(BvmeshError, match="world_size"):  # one process cannot resume it
        train(acdc_like, run, _config(iterations=8), device="cpu", resume=True)

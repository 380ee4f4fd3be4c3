"""Inputs that used to give a silent wrong answer or the wrong exit code."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from bvmesh.cli.main import app

try:
    from conftest import save_nifti
except ImportError:
    from tests.conftest import save_nifti

runner = CliRunner()


def segment(args, weights, roi):
    return runner.invoke(app, ["segment", *map(str, args), "--weights", str(weights), "--device",
                               "cpu", "--roi", f"{roi[0]:.2f},{roi[1]:.2f}", "--no-mesh"])


def summary(path):
    with path.open(newline="") as fh:
        return {r["case"]: r for r in csv.DictReader(fh)}


def test_a_label_map_given_as_an_image_is_skipped_in_a_cohort_and_refused_alone(
        make_case, tiny_weights, tmp_path):
    cohort = tmp_path / "cohort"
    case = make_case("image", folder=cohort)
    gt = cohort / "gt.nii.gz"  # not named *_gt: only its content tells
    save_nifti(case.phantom.labels.astype(np.float32), case.affine, gt)
    out = tmp_path / "out"
    result = segment([cohort, "-o", out, "--base-slice", case.base_slice], tiny_weights, case.roi)
    assert result.exit_code == 4, result.stderr  # written; random weights fail QC
    rows = summary(out / "summary.csv")
    assert rows["image"]["status"] == "ok"
    assert rows["gt"]["status"] == "skipped" and "label map" in rows["gt"]["message"]
    assert not (out / "gt").exists()
    alone = segment([gt, "-o", tmp_path / "o2"], tiny_weights, case.roi)
    assert alone.exit_code == 1 and "label map" in alone.stderr and str(gt) in alone.stderr


def test_a_rerun_replaces_only_what_bvmesh_writes(make_case, tiny_weights, tmp_path):
    case = make_case("heart")
    out = tmp_path / "out"
    first = runner.invoke(app, ["segment", str(case.path), "-o", str(out), "--weights",
                                str(tiny_weights), "--device", "cpu", "--roi",
                                f"{case.roi[0]:.2f},{case.roi[1]:.2f}", "--no-mesh",
                                "--save-probabilities"])
    assert first.exit_code == 4, first.stderr  # random weights fail QC
    notes = out / "heart" / "my_notes.txt"
    notes.write_text("mine")
    again = segment([case.path, "-o", out], tiny_weights, case.roi)
    assert again.exit_code == 4, again.stderr
    assert notes.read_text() == "mine"
    names = {p.name for p in (out / "heart").iterdir()}
    assert "probabilities.nii.gz" not in names  # this run did not write it: no stale copy
    assert {"labels.nii.gz", "report.json", "qc.png", "my_notes.txt"} <= names
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_folders_of_image_nii_gz_take_their_folder_names(make_case, tiny_weights, tmp_path):
    a = make_case("image", folder=tmp_path / "case1")
    make_case("image", folder=tmp_path / "case2", seed=1)
    bases = tmp_path / "bases.csv"
    bases.write_text(f"case,base_slice\ncase1,{a.base_slice}\ncase2,{a.base_slice}\n")
    out = tmp_path / "out"
    result = segment([tmp_path / "case1" / "image.nii.gz", tmp_path / "case2" / "image.nii.gz",
                      "-o", out, "--base-slices", bases], tiny_weights, a.roi)
    assert result.exit_code in (0, 4), result.stderr  # 4: random weights fail QC
    assert set(summary(out / "summary.csv")) == {"case1", "case2"}
    assert json.loads((out / "case1" / "report.json").read_text())["slices"]["base_slice"] == a.base_slice


def test_a_base_slices_csv_naming_no_input_is_an_error(make_case, tiny_weights, tmp_path):
    case = make_case("heart")
    bases = tmp_path / "bases.csv"
    bases.write_text("case,base_slice\nhaert,5\n")  # a typo
    result = segment([case.path, "-o", tmp_path / "out", "--base-slices", bases], tiny_weights,
                     case.roi)
    assert result.exit_code == 1
    assert "haert" in result.stderr and str(bases) in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["segment", "x.nii.gz", "--device", "tpu"],
    ["segment", "x.nii.gz", "--slice-axis", "5"],
    ["segment"],
    ["train", "data", "-o", "run", "--network", "big"],
    ["train", "data", "-o", "run", "--loss", "l2"],
    ["train", "data", "-o", "run", "--fold", "two"],
    ["train", "data", "-o", "run", "--augment", "heavy"],
    ["evaluate", "--cases", "data", "--device", "gpu0"],
])
def test_bad_usage_exits_2(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.stderr)


def test_an_out_of_range_fold_is_bad_usage(tmp_path):
    (tmp_path / "data").mkdir()
    result = runner.invoke(app, ["train", str(tmp_path / "data"), "-o", str(tmp_path / "run"),
                                 "--fold", "7"])
    assert result.exit_code == 2 and "0..4" in result.stderr


def test_verbose_shows_bvmesh_messages_and_no_library_debugging():
    from bvmesh.cli.console import setup_logging

    setup_logging(True)
    assert logging.getLogger("bvmesh.pipeline").isEnabledFor(logging.INFO)
    assert not logging.getLogger("matplotlib.font_manager").isEnabledFor(logging.DEBUG)
    setup_logging(False)
    assert not logging.getLogger("bvmesh.pipeline").isEnabledFor(logging.INFO)


def test_a_cohort_log_has_one_line_per_case_and_whole_numbers(make_case, tiny_weights, tmp_path):
    cohort = tmp_path / "cohort"
    a = make_case("a", folder=cohort)
    make_case("b", folder=cohort, seed=1)
    result = segment([cohort, "-o", tmp_path / "out", "--base-slice", a.base_slice], tiny_weights,
                     a.roi)
    assert result.exit_code == 4, result.stderr  # random weights: no plausible heart
    lines = [line.split("\t") for line in result.stderr.splitlines() if "\t" in line]
    assert [(f[0], f[1]) for f in lines] == [("a", "ok"), ("b", "ok")]
    # The log line alone says which case needs a look, and why.
    assert all(f[2].startswith("qc fail: ") for f in lines)
    rows = summary(tmp_path / "out" / "summary.csv")
    for value in (rows["a"]["lv_pool_ml"], rows["a"]["seconds"]):
        assert value in result.stdout  # the table in a log is not cut to 80 columns


def test_an_interrupted_cohort_keeps_what_it_finished_and_leaves_no_partial(make_case, tmp_path):
    from bvmesh import cohort
    from bvmesh.errors import Interrupted

    paths = [make_case(n, folder=tmp_path / "in").path for n in ("a", "b", "c")]
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".x.partial-0badc0de"  # left by a run killed earlier
    stale.mkdir()
    import os

    os.utime(stale, (0, 0))
    calls = []

    def one(path, base_slice):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        raise cohort.InputError(f"{path}: stand-in failure")

    with pytest.raises(Interrupted, match="after 1 of 3"):
        cohort.run(paths, out, one)
    assert list(summary(out / "summary.csv")) == ["a"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_an_roi_off_the_heart_gives_an_empty_map_that_fails_qc(make_case, tiny_weights, tmp_path):
    case = make_case("heart")
    out = tmp_path / "out"
    result = runner.invoke(app, ["segment", str(case.path), "-o", str(out), "--weights",
                                 str(tiny_weights), "--device", "cpu", "--roi", "9999,-5",
                                 "--no-mesh"])
    assert result.exit_code == 4, result.stderr  # it was exit 0 with all volumes 0.0
    qc = json.loads((out / "heart" / "report.json").read_text())["qc"]
    assert qc["verdict"] == "fail" and "heart_found" in qc["failed"]


def test_sigterm_stops_a_cohort_like_ctrl_c():
    import os
    import signal

    from bvmesh.cli.segment import _sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), _sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert signal.getsignal(signal.SIGTERM) == before

"""`bvmesh segment` end to end: bad input gives one line and leaves nothing; cohorts go on."""

from __future__ import annotations

import csv
import json
import os
import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bvmesh.cli.main import app

try:
    from conftest import save_nifti
except ImportError:
    from tests.conftest import save_nifti

runner = CliRunner()


def invoke(args, weights, roi=None):
    """Run `bvmesh segment` on the CPU with the given weights (and ROI: random weights find none)."""
    extra = ["--weights", str(weights), "--device", "cpu"]
    if roi is not None:
        extra += ["--roi", f"{roi[0]:.2f},{roi[1]:.2f}"]
    return runner.invoke(app, ["segment", *map(str, args), *extra])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def leftovers(root) -> list[str]:
    """Temporary or partial files and folders anywhere below ``root``."""
    return [str(p) for p in root.rglob("*") if "partial" in p.name or ".old-" in p.name]


def make_bad_input(kind, case, tmp_path):
    """A broken variant of a phantom case: (path, extra CLI args, text the error must name)."""
    path = tmp_path / "bad.nii.gz"
    image, affine = case.image.copy(), case.affine
    args = []
    if kind == "missing":
        path = tmp_path / "absent.nii.gz"
    elif kind == "truncated gzip":
        data = case.path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "not gzip":
        path.write_bytes(b"this is not a NIfTI file\n" * 40)
    elif kind == "2D image":
        save_nifti(image[:, :, 4].copy(), affine, path)
    elif kind in ("4D, frame too large", "4D, negative frame"):
        save_nifti(np.stack([image] * 3, axis=-1), affine, path)
        args = ["--frame", "3" if "large" in kind else "-1"]
    elif kind in ("NaN voxels", "Inf voxels"):
        image[10, 10, 3] = np.nan if kind.startswith("NaN") else -np.inf
        save_nifti(image, affine, path)
    elif kind == "all zero":
        save_nifti(np.zeros_like(image), affine, path)
    elif kind == "base slice out of range":
        path = case.path
        args = ["--base-slice", str(image.shape[2])]
    elif kind == "one slice":
        save_nifti(image[:, :, 4:5].copy(), affine, path)
    else:
        raise AssertionError(kind)
    return path, args


BAD_INPUTS = ["missing", "truncated gzip", "not gzip", "2D image", "4D, frame too large",
              "4D, negative frame", "NaN voxels", "Inf voxels", "all zero",
              "base slice out of range", "one slice"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_one_line_exit_1_nothing_written(kind, make_case, tiny_weights, tmp_path):
    case = make_case("good", folder=tmp_path / "in")
    path, args = make_bad_input(kind, case, tmp_path)
    out = tmp_path / "out"
    result = invoke([path, "-o", out, "--base-slice", case.base_slice, *args], tiny_weights, case.roi)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and str(path) in lines[0], lines
    assert not out.exists(), list(out.rglob("*"))
    assert leftovers(tmp_path) == []
    assert "Traceback" not in result.stdout + result.stderr


def test_error_line_shows_brackets_in_paths(tiny_weights, tmp_path):
    """Rich markup must not eat "[red]" or "[2019]" out of a file name in the error line."""
    path = tmp_path / "scans[2019]" / "[red]absent.nii.gz"
    result = invoke([path, "-o", tmp_path / "out"], tiny_weights, (10, 10))
    assert result.exit_code == 1
    assert str(path) in error_lines(result)[0]


def test_discover_takes_existing_paths_literally_and_expands_globs(make_case, tmp_path):
    from bvmesh import cohort
    from bvmesh.errors import InputError

    odd = make_case("case", folder=tmp_path / "scans[2019]")
    assert cohort.discover([str(odd.path)]) == [odd.path]
    plain = [make_case(f"p{i}", folder=tmp_path / "flat").path for i in range(2)]
    assert cohort.discover([str(tmp_path / "flat" / "p*.nii.gz")]) == plain
    assert cohort.discover([str(tmp_path / "flat")]) == plain
    with pytest.raises(InputError, match="matches no file"):
        cohort.discover([str(tmp_path / "flat" / "q*.nii.gz")])


@pytest.mark.parametrize("kind", ["output is a file", "output under a file"])
def test_unusable_output_path(kind, make_case, tiny_weights, tmp_path):
    case = make_case()
    blocker = tmp_path / "taken"
    blocker.write_text("precious")
    out = blocker if kind == "output is a file" else blocker / "sub"
    result = invoke([case.path, "-o", out, "--base-slice", case.base_slice], tiny_weights, case.roi)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and str(out) in lines[0], lines
    assert blocker.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz", "taken"]


def test_no_write_permission(make_case, tiny_weights, tmp_path):
    case = make_case()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that chmod cannot lock out (root)")
        result = invoke([case.path, "-o", locked / "out", "--base-slice", case.base_slice],
                        tiny_weights, case.roi)
        assert result.exit_code == 1
        lines = error_lines(result)
        assert len(lines) == 1 and str(locked / "out") in lines[0], lines
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


class Code:
    def __reduce__(self):
        return (exec, ("open('pwned.txt', 'w').write('x')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", ["truncated", "random bytes", "foreign dict", "pickle with code"])
def test_corrupt_or_foreign_weights(kind, make_case, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = make_case()
    bad = tmp_path / "weights.pt"
    if kind == "truncated":
        bad.write_bytes(tiny_weights.read_bytes()[:5000])
    elif kind == "random bytes":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif kind == "foreign dict":
        torch.save({"model": {"w": torch.ones(2)}}, bad)
    else:
        bad.write_bytes(pickle.dumps({"format": "bvmesh-checkpoint", "init": Code()}))
    out = tmp_path / "out"
    result = invoke([case.path, "-o", out, "--base-slice", case.base_slice], bad, case.roi)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and str(bad) in lines[0] and "weights" in lines[0], lines
    assert not out.exists() and not (tmp_path / "pwned.txt").exists()


def test_no_input_is_bad_usage(tiny_weights, tmp_path):
    result = invoke(["-o", tmp_path / "out"], tiny_weights)
    assert result.exit_code == 2 and "no input given" in result.stderr
    assert not (tmp_path / "out").exists()


def test_single_case_outputs_and_probabilities(make_case, tiny_weights, tmp_path):
    case = make_case("p01", det_sign=-1)
    out = tmp_path / "out"
    result = invoke([case.path, "-o", out, "--base-slice", case.base_slice, "--no-mesh",
                     "--save-probabilities"], tiny_weights, case.roi)
    # Random weights segment no plausible heart: written, and quality control says so (exit 4).
    assert result.exit_code == 4, result.stderr
    folder = out / "p01"
    assert sorted(p.name for p in folder.iterdir()) == ["labels.nii.gz", "myocardium.nii.gz",
                                                        "probabilities.nii.gz", "qc.png", "report.json"]
    labels = nib.load(str(folder / "labels.nii.gz"))
    assert labels.shape == case.image.shape
    np.testing.assert_array_equal(labels.affine, nib.load(str(case.path)).affine)
    assert nib.load(str(folder / "probabilities.nii.gz")).shape == (*case.image.shape, 5)
    report = json.loads((folder / "report.json").read_text())
    assert report["slices"]["base_slice"] == case.base_slice
    assert report["weights"]["path"] == str(tiny_weights)
    assert "p01" in result.stdout  # the summary table
    assert leftovers(tmp_path) == []


def test_4d_input_with_frame_segments_that_frame_and_says_so(make_case, tiny_weights, tmp_path):
    case = make_case()
    cine = tmp_path / "cine.nii.gz"
    save_nifti(np.stack([case.image, case.image[::-1]], axis=-1), case.affine, cine)
    out = tmp_path / "out"
    result = invoke([cine, "-o", out, "--base-slice", case.base_slice, "--no-mesh", "--frame", 0],
                    tiny_weights, case.roi)
    assert result.exit_code == 4, result.stderr  # written; random weights fail QC
    report = json.loads((out / "cine" / "report.json").read_text())
    assert report["frame"] == 0
    assert any("2 frames" in n and "used frame 0" in n for n in report["geometry"]["notes"])
    assert nib.load(str(out / "cine" / "labels.nii.gz")).shape == case.image.shape


def read_summary(path) -> dict[str, dict]:
    with open(path, newline="") as fh:
        return {row["case"]: row for row in csv.DictReader(fh)}


def test_cohort_goes_on_past_a_broken_case_and_resumes(make_case, tiny_weights, tmp_path):
    cohort = tmp_path / "cohort"
    a = make_case("a", folder=cohort)
    b = make_case("b", folder=cohort, base_at_start=True, det_sign=-1, seed=1)
    broken = cohort / "c.nii.gz"
    data = a.path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    (cohort / "a_gt.nii.gz").write_bytes(data)  # a label file: not a case
    bases = tmp_path / "bases.csv"
    bases.write_text(f"case,base_slice\na,{a.base_slice}\nb,{b.base_slice}\nc,3\n")
    assert a.base_slice != b.base_slice
    out = tmp_path / "out"

    first = invoke([cohort, "-o", out, "--base-slices", bases, "--no-mesh", "--json"],
                   tiny_weights, a.roi)
    assert first.exit_code == 1, first.stderr
    printed = json.loads(first.stdout)  # stdout is pure JSON
    assert printed["failed"] == 1
    assert {c["case"]: c["status"] for c in printed["cases"]} == {"a": "ok", "b": "ok", "c": "failed"}
    # Not a terminal: one line per case, the failed one naming its file.
    lines = error_lines(first)
    assert [line.split("\t")[:2] for line in lines] == [["a", "ok"], ["b", "ok"], ["c", "failed"]]
    assert str(broken) in lines[2]
    summary = read_summary(out / "summary.csv")
    assert len(summary) == 3
    assert [summary[c]["status"] for c in "abc"] == ["ok", "ok", "failed"]
    assert str(broken) in summary["c"]["message"]
    for case, name in ((a, "a"), (b, "b")):
        report = json.loads((out / name / "report.json").read_text())
        assert report["slices"]["base_slice"] == case.base_slice
        assert int(summary[name]["base_slice"]) == case.base_slice
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "summary.csv"]
    stamp = (out / "a" / "labels.nii.gz").stat().st_mtime_ns

    second = invoke([cohort, "-o", out, "--base-slices", bases, "--no-mesh", "--skip-existing",
                     "--json"], tiny_weights, a.roi)
    assert second.exit_code == 1
    statuses = {c["case"]: c["status"] for c in json.loads(second.stdout)["cases"]}
    assert statuses == {"a": "skipped", "b": "skipped", "c": "failed"}
    assert (out / "a" / "labels.nii.gz").stat().st_mtime_ns == stamp
    kept = read_summary(out / "summary.csv")
    assert [r["status"] for r in kept.values()] == ["skipped", "skipped", "failed"]
    assert int(kept["b"]["base_slice"]) == b.base_slice and kept["b"]["lv_pool_ml"]  # still listed

    # The run's own summary.csv, one base corrected, re-runs that case alone.
    fixed = tmp_path / "fixed.csv"
    with fixed.open("w", newline="") as fh:
        csv.writer(fh).writerows(_corrected(out / "summary.csv", "b", b.base_slice - 1))
    third = invoke([cohort, "-o", out, "--base-slices", fixed, "--no-mesh", "--skip-existing",
                    "--json"], tiny_weights, a.roi)
    statuses = {c["case"]: c["status"] for c in json.loads(third.stdout)["cases"]}
    assert statuses == {"a": "skipped", "b": "ok", "c": "failed"}
    assert json.loads((out / "b" / "report.json").read_text())["slices"]["base_slice"] == b.base_slice - 1
    assert (out / "a" / "labels.nii.gz").stat().st_mtime_ns == stamp
    assert leftovers(tmp_path) == []


def _corrected(summary: os.PathLike, case: str, base: int) -> list[list[str]]:
    """The rows of a summary.csv with ``case``'s base_slice set to ``base``."""
    rows = list(csv.reader(summary.open(newline="")))
    col = rows[0].index("base_slice")
    for row in rows[1:]:
        if row[rows[0].index("case")] == case:
            row[col] = str(base)
    return rows


def test_base_slices_csv_errors_name_the_file(make_case, tiny_weights, tmp_path):
    case = make_case()
    bases = tmp_path / "bases.csv"
    bases.write_text("case,base_slice\ncase,six\n")
    result = invoke([case.path, "-o", tmp_path / "out", "--base-slices", bases], tiny_weights, case.roi)
    assert result.exit_code == 1
    assert f"{bases}:2" in error_lines(result)[0]
    assert not (tmp_path / "out").exists()


def test_shards_cover_a_cohort_once_and_merge(make_case, tiny_weights, tmp_path):
    cases = [make_case(f"c{i}", folder=tmp_path / "in", seed=i) for i in range(5)]
    out = tmp_path / "out"
    paths = [c.path for c in cases]
    seen = []
    for i in range(3):
        order = paths[i:] + paths[:i]  # another argument order for every shard
        result = invoke([*order, "-o", out, "--base-slice", cases[0].base_slice, "--no-mesh",
                         "--shard", f"{i}/3"], tiny_weights, cases[0].roi)
        assert result.exit_code in (0, 4), result.stderr
        seen += list(read_summary(out / f"summary.shard-{i}-of-3.csv"))
    assert sorted(seen) == [f"c{i}" for i in range(5)]  # every case in exactly one shard
    assert not (out / "summary.csv").exists()
    merged = runner.invoke(app, ["summary", str(out)])
    assert merged.exit_code == 0, merged.stderr
    assert sorted(read_summary(out / "summary.csv")) == sorted(seen)
    (out / "summary.shard-1-of-3.csv").unlink()
    partial = runner.invoke(app, ["summary", str(out)])
    assert partial.exit_code == 1 and "1/3" in partial.stderr


@pytest.mark.parametrize("bad", ["3/3", "x", "1/0", "-1/2"])
def test_bad_shard_is_bad_usage(bad, make_case, tiny_weights, tmp_path):
    case = make_case()
    assert invoke([case.path, "-o", tmp_path / "out", "--shard", bad], tiny_weights).exit_code == 2


def test_summary_of_a_folder_without_shards_is_one_line(tmp_path):
    result = runner.invoke(app, ["summary", str(tmp_path)])
    assert result.exit_code == 1
    assert len([x for x in result.stderr.splitlines() if x.strip()]) == 1


def test_workers_give_the_same_cases_as_one_process(make_case, tiny_weights, tmp_path):
    cohort = tmp_path / "cohort"
    cases = {name: make_case(name, folder=cohort, seed=i) for i, name in enumerate("abc")}
    broken = cohort / "d.nii.gz"
    broken.write_bytes(b"not an image")
    bases = tmp_path / "bases.csv"
    bases.write_text("".join(f"{n},{c.base_slice}\n" for n, c in cases.items()))
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        result = invoke([cohort, "-o", out, "--base-slices", bases, "--no-mesh", "--json",
                         "--workers", workers], tiny_weights, cases["a"].roi)
        assert result.exit_code == 1, result.stderr  # d failed, the others did not
        runs[workers] = read_summary(out / "summary.csv")
        assert list(runs[workers]) == ["a", "b", "c", "d"]  # input order, however they finished
    for name in "abc":
        one, two = (nib.load(str(tmp_path / f"w{w}" / name / "labels.nii.gz")) for w in (1, 2))
        np.testing.assert_array_equal(np.asarray(one.dataobj), np.asarray(two.dataobj))
        assert runs[2][name]["status"] == "ok"
        assert runs[2][name]["lv_pool_ml"] == runs[1][name]["lv_pool_ml"]
    assert runs[2]["d"]["status"] == "failed" and "d.nii.gz" in runs[2]["d"]["message"]
    assert leftovers(tmp_path) == []

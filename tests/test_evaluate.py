"""Scoring, pairing, summaries, outputs and the `bvmesh evaluate` command, on synthetic hearts."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from bvmesh import evaluate as ev
from bvmesh.cli.main import app
from bvmesh.errors import InputError
from bvmesh.labels import LABEL_MAPS, parse_label_map

SPACING = (1.5, 1.4, 8.0)


def affine_for(flip: bool = False) -> np.ndarray:
    """Oblique, orthogonal affine with the given spacing; ``flip``: negative determinant."""
    a = 0.4
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    if flip:
        rot = rot @ np.diag([-1, 1, 1])
    aff = np.eye(4)
    aff[:3, :3] = rot * np.array(SPACING)
    aff[:3, 3] = (-60.0, 30.5, 12.0)
    return aff


def heart(shape=(48, 44, 12), base=2, apex=9, shift=(0.0, 0.0)) -> np.ndarray:
    """A tapering biventricular heart in bvmesh labels, base at slice ``base``."""
    i, j = np.meshgrid(np.arange(shape[0]) * SPACING[0], np.arange(shape[1]) * SPACING[1],
                       indexing="ij")
    lab = np.zeros(shape, np.uint8)
    n = abs(apex - base)
    step = 1 if apex > base else -1
    for t, k in enumerate(range(base, apex + step, step)):
        r = math.sqrt(max(1 - (t / (n + 1)) ** 2, 0.05))
        cx, cy = 30 + shift[0], 30 + shift[1]
        d_lv = np.hypot(i - cx, j - cy)
        d_rv = np.hypot(i - (cx + 14 * r), j - cy)
        lv_pool, lv_epi = d_lv < 10 * r, d_lv < 16 * r
        rv_pool = (d_rv < 16 * r) & ~lv_epi
        rv_wall = (d_rv < 16 * r + 3) & ~lv_epi & ~rv_pool
        sl = lab[:, :, k]
        sl[rv_wall] = 4
        sl[rv_pool] = 3
        sl[lv_epi] = 2
        sl[lv_pool] = 1
    return lab


def to_acdc(lab: np.ndarray) -> np.ndarray:
    """bvmesh labels -> ACDC labels (1 RV pool, 2 LV myo, 3 LV pool; RV wall unlabelled)."""
    out = np.zeros_like(lab)
    out[lab == 3], out[lab == 2], out[lab == 1] = 1, 2, 3
    return out


def save(path, lab, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), str(path))
    return path


@pytest.mark.parametrize("flip", [False, True])
def test_perfect_prediction(flip):
    gt = heart()
    r = ev.score_case(gt.copy(), gt, affine_for(flip), case="c")
    assert r.status == ev.OK and set(r.scores) == set(ev.STRUCTURES)
    for s in r.scores.values():
        assert s["dice"] == 1.0 and s["hd95_mm"] == 0.0 and s["assd_mm"] == 0.0
        assert s["vol_err_ml"] == 0.0 and s["outside_ml"] == 0.0 and s["consistency"] == 0.0
        assert s["dice_iso"] == pytest.approx(1.0)
    assert r.lv_mass_gt_g == r.lv_mass_pred_g > 0
    assert (r.slice_range.base, r.slice_range.apex, r.slice_range.axis) == (2, 9, 2)


def test_shifted_prediction_scores_in_mm():
    gt = heart()
    pred = np.roll(gt, 2, axis=0)  # 2 voxels of 1.5 mm
    r = ev.score_case(pred, gt, affine_for(), case="c")
    assert r.scores["lv_pool"]["hd_mm"] == pytest.approx(3.0)
    assert 0.5 < r.scores["bv_myo"]["dice"] < 0.95
    assert r.scores["lv_pool"]["vol_err_ml"] == pytest.approx(0.0)


def test_slice_dice_runs_from_base_to_apex_whichever_way_the_file_goes():
    gt = heart(base=9, apex=2)  # base at the high end
    pred = gt.copy()
    pred[:, :, 9][pred[:, :, 9] == 2] = 0  # lose the myocardium on the base slice only
    r = ev.score_case(pred, gt, affine_for(), case="c")
    assert (r.slice_range.base, r.slice_range.apex) == (9, 2)
    curve = r.slice_dice["lv_myo"]
    assert curve[0] == 0.0 and np.all(curve[1:] == 1.0)
    assert r.scores["lv_myo"]["consistency"] == pytest.approx(1 / 7)


def test_prediction_outside_the_labelled_slices_is_reported_not_scored():
    gt = heart()
    pred = gt.copy()
    pred[:, :, 0] = gt[:, :, 2]  # a myocardium ring above the base
    r = ev.score_case(pred, gt, affine_for(), case="c")
    assert r.scores["lv_myo"]["dice"] == 1.0
    ring = np.count_nonzero(gt[:, :, 2] == 2) * np.prod(SPACING) / 1000
    assert r.scores["lv_myo"]["outside_ml"] == pytest.approx(ring)
    assert any("outside" in m for m in r.messages)


def test_acdc_ground_truth_scores_rv_myocardium_as_na():
    structures = ev.scored_structures(LABEL_MAPS["acdc"], LABEL_MAPS["bvmesh"])
    assert structures == ("lv_pool", "lv_myo", "rv_pool")
    assert ev.structures_provided(LABEL_MAPS["binary"]) == ("bv_myo",)
    assert ev.scored_structures(LABEL_MAPS["bvmesh"], LABEL_MAPS["binary"]) == ("bv_myo",)
    gt = heart()
    gt[gt == 4] = 0
    r = ev.score_case(heart(), gt, affine_for(), case="c")  # default: every structure
    assert "rv_myo" not in r.scores and r.scores["rv_pool"]["dice"] == 1.0
    assert any("rv_myo: absent from the ground truth" in m for m in r.messages)


def test_empty_prediction_and_bad_input():
    gt = heart()
    r = ev.score_case(np.zeros_like(gt), gt, affine_for(), case="c")
    assert r.status == ev.EMPTY and r.scores["lv_myo"]["dice"] == 0.0
    assert math.isnan(r.scores["lv_myo"]["hd95_mm"])
    with pytest.raises(InputError, match="not bvmesh labels"):
        ev.score_case(np.full_like(gt, 7), gt, affine_for())
    with pytest.raises(InputError, match="no voxel"):
        ev.score_case(gt, np.zeros_like(gt), affine_for())
    with pytest.raises(InputError, match="shape"):
        ev.score_case(gt[:-1], gt, affine_for())
    results = list(ev.score_predictions([("a", gt, gt, affine_for()),
                                         ("b", gt[:-1], gt, affine_for()),
                                         ("c", gt, gt, affine_for())]))
    assert [x.status for x in results] == [ev.OK, ev.FAILED, ev.OK]
    assert "shape" in results[1].messages[0]


def make_folders(tmp_path):
    """ACDC-style GT folder (images beside *_gt files, nested) and a mixed prediction folder."""
    aff = affine_for()
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    names = ["p1_frame01", "p2_frame01", "p3_frame01", "p4_frame01", "p5_frame01",
             "p6_frame01", "p7_frame01"]
    for n in names:
        save(gt_dir / n[:2] / f"{n}_gt.nii.gz", to_acdc(heart()), aff)
        save(gt_dir / n[:2] / f"{n}.nii.gz", np.full((48, 44, 12), 9), aff)  # the "image"
    good = np.roll(heart(), 1, axis=1)
    save(pred_dir / "p1_frame01" / "labels.nii.gz", good, aff)  # bvmesh segment -o layout
    save(pred_dir / "p1_frame01" / "probabilities.nii.gz", good, aff)  # ignored
    save(pred_dir / "p2_frame01.nii.gz", heart(), aff)
    save(pred_dir / "p3_frame01.nii.gz", heart()[:-2], aff[:, :])  # other grid
    shifted = aff.copy()
    shifted[:3, 3] += 0.5
    save(pred_dir / "p4_frame01.nii.gz", heart(), shifted)  # other affine
    save(pred_dir / "p5_frame01.nii.gz", np.zeros((48, 44, 12)), aff)  # empty
    save(pred_dir / "p6_frame01.nii.gz", np.full((48, 44, 12), 6), aff)  # unknown label
    save(pred_dir / "extra.nii.gz", heart(), aff)  # no ground truth; p7 has no prediction
    return pred_dir, gt_dir


def test_pairing_and_statuses(tmp_path):
    pred_dir, gt_dir = make_folders(tmp_path)
    pairs = {p.case: p for p in ev.find_pairs(pred_dir, gt_dir)}
    assert pairs["p1_frame01"].pred.name == "labels.nii.gz"
    assert pairs["extra"].gt is None and pairs["p7_frame01"].pred is None
    assert all(p.gt is None or p.gt.name.endswith("_gt.nii.gz") for p in pairs.values())
    result = ev.evaluate(pred_dir, gt_dir, labels="acdc")
    status = {c.case: c for c in result.cases}
    assert status["p1_frame01"].status == ev.OK and status["p2_frame01"].status == ev.OK
    assert status["p2_frame01"].scores["lv_myo"]["dice"] == 1.0
    assert "grid" in status["p3_frame01"].messages[0]
    assert "affine differs" in status["p4_frame01"].messages[0]
    assert status["p5_frame01"].status == ev.EMPTY
    assert "[6]" in status["p6_frame01"].messages[0]
    assert status["p7_frame01"].status == ev.MISSING
    assert [p.case for p in result.unpaired] == ["extra"]
    assert result.exit_code == 1
    counts = result.summary()["counts"]
    assert counts == {"ok": 2, "empty_prediction": 1, "failed": 3, "missing_prediction": 1,
                      "cases": 7, "scored": 3, "unpaired_predictions": 1}
    s = result.summary()["structures"]["lv_myo"]["dice"]
    assert s["n"] == 3 and s["median"] < 1.0 and "rv_myo" not in result.summary()["structures"]


def test_single_files_and_segment_output_folder(tmp_path):
    aff = affine_for(flip=True)
    gt = save(tmp_path / "case_gt.nii.gz", heart(), aff)
    pred = save(tmp_path / "out" / "labels.nii.gz", heart(), aff)
    for p in (pred, pred.parent):
        result = ev.evaluate(p, gt)
        assert [c.case for c in result.cases] == ["case"]
        assert result.cases[0].scores["bv_myo"]["dice"] == 1.0 and result.exit_code == 0
    with pytest.raises(InputError, match="folder"):
        ev.evaluate(gt, tmp_path / "out")


def test_binary_ground_truth_scores_the_biventricular_myocardium(tmp_path):
    aff = affine_for()
    myo = np.isin(heart(), (2, 4)).astype(np.uint8)
    gt = save(tmp_path / "c_gt.nii.gz", myo, aff)
    pred = save(tmp_path / "c.nii.gz", heart(), aff)
    result = ev.evaluate(pred, gt, labels="binary")
    assert result.structures == ("bv_myo",)
    assert result.cases[0].scores["bv_myo"]["dice"] == 1.0


def test_summary_statistics():
    cases = []
    for i, d in enumerate([0.7, 0.8, 0.9, 1.0]):
        c = ev.CaseResult(f"c{i}", ev.OK)
        c.scores["lv_myo"] = {m: math.nan for m in ev.METRICS}
        c.scores["lv_myo"].update(dice=d, vol_gt_ml=100.0, vol_pred_ml=100.0 + 10 * i,
                                  vol_err_ml=10.0 * i)
        cases.append(c)
    cases.append(ev.CaseResult("bad", ev.FAILED, ["broken"]))
    summary = ev.Evaluation(cases, ("lv_myo",)).summary()
    d = summary["structures"]["lv_myo"]["dice"]
    assert d["mean"] == pytest.approx(0.85) and d["median"] == pytest.approx(0.85)
    assert d["iqr"] == pytest.approx(0.15) and d["std"] == pytest.approx(np.std(
        [0.7, 0.8, 0.9, 1.0], ddof=1)) and d["n"] == 4
    assert summary["structures"]["lv_myo"]["hd95_mm"] == {"n": 0, "n_na": 4}
    ba = summary["structures"]["lv_myo"]["volume_agreement_ml"]
    assert ba["bias"] == pytest.approx(15.0)
    assert summary["problems"] == [{"case": "bad", "status": "failed", "message": "broken"}]
    json.dumps(summary, allow_nan=False)  # NaN never reaches the JSON


def test_written_results(tmp_path):
    pred_dir, gt_dir = make_folders(tmp_path)
    result = ev.evaluate(pred_dir, gt_dir, labels="acdc")
    files = ev.write_results(result, tmp_path / "res")
    names = {p.name for p in files}
    assert names == {"cases.csv", "slices.csv", "summary.json", "results.md", "slice_dice.png",
                     "boxplot.png", "bland_altman.png"}
    for p in files:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    rows = list(csv.DictReader((tmp_path / "res" / "cases.csv").open()))
    assert len(rows) == 7
    row = {r["case"]: r for r in rows}
    assert row["p2_frame01"]["lv_myo_dice"] == "1.0000"
    assert row["p3_frame01"]["lv_myo_dice"] == "n/a" and row["p3_frame01"]["status"] == "failed"
    assert "rv_myo_dice" not in rows[0]
    slices = list(csv.DictReader((tmp_path / "res" / "slices.csv").open()))
    first = [r for r in slices if r["case"] == "p2_frame01" and r["structure"] == "lv_myo"]
    assert first[0]["slice"] == "2" and len(first) == 8
    md = (tmp_path / "res" / "results.md").read_text()
    assert "| LV myocardium | 3 |" in md and "p3_frame01" in md
    assert not list((tmp_path / "res").glob(".*partial*"))


def test_run_evaluation_reports_through_callbacks_and_prints_nothing(tmp_path, capsys):
    pred_dir, gt_dir = make_folders(tmp_path)
    events = []
    evaluation, written = ev.run_evaluation(
        pred_dir, gt_dir, labels="acdc", output=tmp_path / "r", plots=False,
        on_plan=lambda plan: events.append(("plan", plan.total, plan.found, plan.segmenting,
                                            [p.case for p in plan.unpaired], plan.folds)),
        on_case=lambda result: events.append(("case", result.case)),
        on_scored=lambda: events.append(("scored",)))
    assert events[0] == ("plan", 7, 7, False, ["extra"], ())
    assert [e[1] for e in events[1:-1]] == [c.case for c in evaluation.cases]
    assert events[-1] == ("scored",) and len(evaluation.cases) == 7
    assert {p.name for p in written} == {"cases.csv", "slices.csv", "summary.json", "results.md"}
    assert evaluation.exit_code == 1 and [p.case for p in evaluation.unpaired] == ["extra"]
    assert capsys.readouterr() == ("", "")
    # Options that do not go together are InputErrors, raised before anything is read.
    with pytest.raises(InputError, match="not both"):
        ev.run_evaluation(pred_dir, gt_dir, cases=gt_dir, output=tmp_path / "x")
    with pytest.raises(InputError, match="--folds K needs --weights"):
        ev.run_evaluation(cases=gt_dir, folds=2, output=tmp_path / "x")
    assert not (tmp_path / "x").exists()

def test_cli(tmp_path):
    aff = affine_for()
    gt = save(tmp_path / "gt" / "a_gt.nii.gz", to_acdc(heart()), aff)
    save(tmp_path / "pred" / "a.nii.gz", heart(), aff)
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"),
                              "--labels", "acdc", "-o", str(tmp_path / "r"), "--json",
                              "--no-plots"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["structures"]["lv_myo"]["dice"]["mean"] == 1.0
    assert (tmp_path / "r" / "cases.csv").exists()
    # A second ground truth without prediction: scored run, table, then exit code 1.
    save(gt.parent / "b_gt.nii.gz", to_acdc(heart()), aff)
    res = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"),
                              "--labels", "acdc", "-o", str(tmp_path / "r2"), "--no-plots"])
    assert res.exit_code == 1
    assert "LV myo" in res.stdout and "missing_prediction" in res.stderr
    res = runner.invoke(app, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"),
                              "--labels", "nonsense"])
    assert res.exit_code == 2


def test_label_map_translation_used_for_ground_truth(tmp_path):
    mapping = parse_label_map("acdc")
    lab, _ = ev.load_labels(save(tmp_path / "x_gt.nii.gz", to_acdc(heart()), affine_for()),
                            mapping)
    expected = heart()
    expected[expected == 4] = 0
    assert np.array_equal(lab, expected)
    with pytest.raises(InputError, match="non-integer"):
        img = nib.Nifti1Image(np.full((10, 10, 4), 0.5, np.float32), affine_for())
        nib.save(img, str(tmp_path / "f.nii.gz"))
        ev.load_labels(tmp_path / "f.nii.gz", mapping)


def test_segment_then_score_with_a_stand_in_segmenter(tmp_path):
    from types import SimpleNamespace

    from bvmesh import io as bio

    aff = affine_for()
    data = tmp_path / "data"
    save(data / "a_gt.nii.gz", to_acdc(heart()), aff)
    save(data / "a.nii.gz", np.full((48, 44, 12), 9), aff)
    save(data / "b_gt.nii.gz", to_acdc(heart()), aff)  # no image beside it
    pairs = ev.find_image_cases(data)
    assert [(p.case, p.pred and p.pred.name) for p in pairs] == [("a", "a.nii.gz"), ("b", None)]
    calls = []

    def fake_segment(path, *, model, device, propagation, fusion, base_slice, plausibility):
        calls.append((path.name, model, propagation, base_slice))
        removed = [{"rule": "apical_waist", "structure": "heart", "ml": 12.5},
                   {"rule": "rv_off_septum", "structure": "rv_pool", "ml": 0.25}]
        return SimpleNamespace(labels=heart(), volume=bio.load(path),
                               report={"plausibility": removed})

    results = list(ev.segment_and_score(pairs, labels="acdc", propagation=False,
                                        base_from_gt=True, save_dir=tmp_path / "pred",
                                        segment_fn=fake_segment, model="M"))
    assert calls == [("a.nii.gz", "M", False, 2)]
    a, b = results
    assert a.status == ev.OK and a.scores["lv_myo"]["dice"] == 1.0 and "rv_myo" not in a.scores
    assert a.segment_seconds >= 0 and b.status == ev.FAILED and "no image" in b.messages[0]
    assert a.removed == "apical_waist heart 12.5; rv_off_septum rv_pool 0.25"
    # The saved prediction is in the layout PRED accepts, so it scores the same again.
    again = ev.evaluate(tmp_path / "pred", data, labels="acdc")
    assert {c.case: c.status for c in again.cases} == {"a": ev.OK, "b": ev.MISSING}
    assert again.cases[0].scores["lv_myo"]["dice"] == 1.0


def test_cli_usage_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["evaluate"]).exit_code == 2
    assert runner.invoke(app, ["evaluate", str(tmp_path), str(tmp_path), "--cases",
                               str(tmp_path)]).exit_code == 2


# --------------------------------------------------------------------------- held-out subjects

SUBJECTS = ["patient001", "patient002", "patient003", "patient004"]
FRAMES = ["frame01", "frame12"]  # ED and ES of one subject: always on one side of a fold


@pytest.fixture
def acdc_like(make_case, tmp_path):
    """A tiny ACDC-like folder: per-subject folders holding phantom images and ACDC label maps.

    Returns (data folder, {image path: exact bvmesh labels}). patient004 misses one image.
    """
    try:
        from conftest import save_nifti
    except ImportError:
        from tests.conftest import save_nifti

    data, truth = tmp_path / "acdc", {}
    for n, subject in enumerate(SUBJECTS):
        for f, frame in enumerate(FRAMES):
            name = f"{subject}_{frame}"
            case = make_case(name, folder=data / subject, det_sign=(-1) ** n, seed=2 * n + f)
            save_nifti(to_acdc(case.phantom.labels), case.affine,
                       data / subject / f"{name}_gt.nii.gz")
            truth[case.path] = case.phantom.labels
    (data / "patient004" / "patient004_frame12.nii.gz").unlink()  # ground truth only
    return data, truth


def tiny_checkpoint(path, held_out):
    """A random tiny model saved as a real checkpoint recording ``held_out`` subjects."""
    import torch

    from bvmesh.model import build_model, save_checkpoint

    try:
        from conftest import TINY_CONFIG
    except ImportError:
        from tests.conftest import TINY_CONFIG

    torch.manual_seed(len(path.parts))
    record = {} if held_out is None else {"held_out_subjects": held_out}
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_model(TINY_CONFIG)
    with torch.no_grad():  # a random locator's 0.5 threshold is a coin flip: let it see a heart
        model.locator.net.head.bias[:] = torch.tensor([-3.0, 3.0])
    return save_checkpoint(model, path, record=record)


def fold_run(root, folds):
    """RUN_DIR/fold{i}/model.pt as `bvmesh train --fold all -o RUN_DIR` writes them."""
    for i, subjects in enumerate(folds):
        tiny_checkpoint(root / f"fold{i}" / "model.pt", subjects)
    return root


class FakeSegmenter:
    """Stands in for bvmesh.segment (a random model finds no heart): returns the exact
    labels, minus the LV pool for patient003, and records each call."""

    def __init__(self, truth):
        self.truth, self.calls = truth, []

    def __call__(self, path, *, model, device, propagation, fusion, base_slice, plausibility):
        from types import SimpleNamespace

        from bvmesh import io as bio

        self.calls.append((path.name, id(model), propagation, base_slice))
        labels = self.truth[path].copy()
        if path.name.startswith("patient003"):
            labels[labels == 1] = 2
        return SimpleNamespace(labels=labels, volume=bio.load(path))


def test_recorded_held_out_subjects():
    from types import SimpleNamespace

    from bvmesh.errors import WeightsError

    for record in ({}, {"held_out_subjects": []}, {"note": "x"}):
        with pytest.raises(WeightsError) as info:
            ev.recorded_held_out(SimpleNamespace(record=record), "w.pt")
        assert str(info.value) == "w.pt was trained on all data; there is nothing held out"
    with pytest.raises(WeightsError, match="not a list"):
        ev.recorded_held_out(SimpleNamespace(record={"held_out_subjects": "patient001"}), "w.pt")
    model = SimpleNamespace(record={"held_out_subjects": ["patient003", "patient001"]})
    assert ev.recorded_held_out(model, "w.pt") == ("patient001", "patient003")


def test_case_subjects_are_those_training_records(acdc_like, tmp_path):
    from bvmesh.train.data import find_cases

    data, _ = acdc_like
    pairs = ev.find_image_cases(data)
    subjects = ev.case_subjects(data, pairs)
    assert subjects == {f"{s}_{f}": s for s in SUBJECTS for f in FRAMES}
    # The same subjects as bvmesh train's, for every case that has an image.
    assert {c.name: c.subject for c in find_cases(data)} == {
        k: v for k, v in subjects.items() if k != "patient004_frame12"}
    flat = tmp_path / "flat"
    save(flat / "a_gt.nii.gz", to_acdc(heart()), affine_for())
    save(flat / "a.nii.gz", np.full((48, 44, 12), 9.0), affine_for())
    assert ev.case_subjects(flat, ev.find_image_cases(flat)) == {"a": "a"}


def test_plan_folds_assigns_cases_checks_disjointness_and_coverage(acdc_like):
    data, _ = acdc_like
    pairs = ev.find_image_cases(data)
    folds, warnings = ev.plan_folds(data, pairs, [("f0", ["patient001", "patient004"]),
                                                  ("f1", ["patient002", "patient003"])])
    assert [f.index for f in folds] == [0, 1] and warnings == []
    assert [p.case for p in folds[0].pairs] == ["patient001_frame01", "patient001_frame12",
                                                "patient004_frame01", "patient004_frame12"]
    assert [p.case for p in folds[1].pairs] == ["patient002_frame01", "patient002_frame12",
                                                "patient003_frame01", "patient003_frame12"]
    # Overlapping folds are not one cross-validation.
    with pytest.raises(InputError, match=r"f0 and f2 both hold out 1 subject\(s\) \(patient001\)"):
        ev.plan_folds(data, pairs, [("f0", ["patient001"]), ("f1", ["patient002"]),
                                    ("f2", ["patient001", "patient003"])])
    # Subjects no fold holds out are named; held-out subjects missing from DATA_DIR too.
    folds, warnings = ev.plan_folds(data, pairs, [("f0", ["patient001", "patient009"]),
                                                  ("f1", ["patient002"])])
    assert sum(len(f.pairs) for f in folds) == 4
    assert any("f0: 1 of its 2 held-out subjects are not in" in w and "patient009" in w
               for w in warnings)
    assert any("2 of the 4 subjects" in w and "patient003, patient004" in w for w in warnings)
    # A single --held-out model is not expected to cover the data.
    folds, warnings = ev.plan_folds(data, pairs, [("w.pt", ["patient002"])], indexed=False)
    assert folds[0].index is None and warnings == []
    assert [p.case for p in folds[0].pairs] == ["patient002_frame01", "patient002_frame12"]
    with pytest.raises(InputError, match="holds none of w.pt's held-out subjects"):
        ev.plan_folds(data, pairs, [("w.pt", ["patient077"])], indexed=False)


def test_fold_weights_name_the_missing_fold(tmp_path):
    run = fold_run(tmp_path / "run", [["patient001"], ["patient002"]])
    assert ev.fold_weights(run, 2) == [run / "fold0" / "model.pt", run / "fold1" / "model.pt"]
    from bvmesh.errors import WeightsError

    with pytest.raises(WeightsError, match=r"run/fold2/model\.pt: missing fold model"):
        ev.fold_weights(run, 3)
    with pytest.raises(WeightsError, match="not a folder"):
        ev.fold_weights(tmp_path / "nowhere", 2)


def test_folds_score_only_held_out_cases_each_with_its_model(acdc_like):
    data, truth = acdc_like
    pairs = ev.find_image_cases(data)
    folds, _ = ev.plan_folds(data, pairs, [("f0", ["patient001"]), ("f1", ["patient003"])])
    models = [object(), object()]
    fake = FakeSegmenter(truth)
    results = list(ev.segment_and_score_folds(folds, models, labels="acdc", propagation=False,
                                              base_from_gt=True, segment_fn=fake))
    assert [(r.case, r.fold) for r in results] == [
        ("patient001_frame01", 0), ("patient001_frame12", 0),
        ("patient003_frame01", 1), ("patient003_frame12", 1)]
    assert [c[1] for c in fake.calls] == [id(models[0])] * 2 + [id(models[1])] * 2
    assert all(c[2] is False for c in fake.calls)  # --no-propagation reaches the segmenter
    assert all(r.status == ev.OK for r in results)
    assert [r.scores["lv_pool"]["dice"] for r in results] == [1.0, 1.0, 0.0, 0.0]
    evaluation = ev.Evaluation(results, ("lv_pool", "lv_myo", "rv_pool"), "acdc", folds=folds)
    per_fold = evaluation.summary()["folds"]
    assert [(f["fold"], f["cases"], f["scored"]) for f in per_fold] == [(0, 2, 2), (1, 2, 2)]
    assert per_fold[0]["structures"]["lv_pool"]["dice"] == 1.0
    assert per_fold[1]["structures"]["lv_pool"]["dice"] == 0.0
    assert per_fold[1]["held_out_subjects"] == ["patient003"]


def read_csv(path):
    return list(csv.DictReader(path.open()))


def test_cli_held_out_scores_only_the_unseen_subjects(acdc_like, tmp_path, monkeypatch):
    import bvmesh.pipeline

    data, truth = acdc_like
    fake = FakeSegmenter(truth)
    monkeypatch.setattr(bvmesh.pipeline, "segment", fake)
    weights = tiny_checkpoint(tmp_path / "w" / "model.pt", ["patient002", "patient004"])
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--cases", str(data), "--weights", str(weights),
                              "--held-out", "--labels", "acdc", "--device", "cpu",
                              "--no-propagation", "-o", str(tmp_path / "r"), "--no-plots"])
    # patient004_frame12 has no image: reported as failed, so exit code 1.
    assert res.exit_code == 1, res.output
    rows = read_csv(tmp_path / "r" / "cases.csv")
    assert [(r["case"], r["status"]) for r in rows] == [
        ("patient002_frame01", "ok"), ("patient002_frame12", "ok"),
        ("patient004_frame01", "ok"), ("patient004_frame12", "failed")]
    assert "fold" not in rows[0]
    assert {c[2] for c in fake.calls} == {False} and len(fake.calls) == 3
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["folds"][0]["fold"] is None
    assert summary["folds"][0]["held_out_subjects"] == ["patient002", "patient004"]
    assert "scoring 4 of the 8 cases" in res.stderr
    # Weights trained on all data hold nothing out: one clear line, exit 1, nothing scored.
    everything = tiny_checkpoint(tmp_path / "all" / "model.pt", None)
    res = runner.invoke(app, ["evaluate", "--cases", str(data), "--weights", str(everything),
                              "--held-out", "--device", "cpu", "-o", str(tmp_path / "r2")])
    assert res.exit_code == 1
    assert res.stderr.strip() == (f"error: {everything} was trained on all data; there is "
                                  "nothing held out")
    assert not (tmp_path / "r2").exists()


def test_cli_folds_pool_every_fold_into_one_evaluation(acdc_like, tmp_path, monkeypatch):
    import bvmesh.model
    import bvmesh.pipeline

    data, truth = acdc_like
    (data / "patient004" / "patient004_frame12_gt.nii.gz").unlink()  # every case has an image
    fake = FakeSegmenter(truth)
    monkeypatch.setattr(bvmesh.pipeline, "segment", fake)
    loads = []
    real_load = bvmesh.model.load_model
    monkeypatch.setattr(bvmesh.model, "load_model",
                        lambda path, device="cpu": loads.append(str(path)) or real_load(path, device))
    run = fold_run(tmp_path / "runs" / "acdc", [["patient001", "patient003"],
                                                ["patient002", "patient004"]])
    runner = CliRunner()
    args = ["evaluate", "--cases", str(data), "--weights", str(run), "--folds", "2", "--labels",
            "acdc", "--device", "cpu", "--base-from-gt", "--no-plots"]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "r"), "--no-propagation"])
    assert res.exit_code == 0, res.output
    assert loads == [str(run / "fold0" / "model.pt"), str(run / "fold1" / "model.pt")]
    assert {c[2] for c in fake.calls} == {False} and len(fake.calls) == 7
    assert len({c[1] for c in fake.calls[:4]}) == 1 != len({c[1] for c in fake.calls})
    rows = read_csv(tmp_path / "r" / "cases.csv")
    assert [(r["case"], r["fold"]) for r in rows] == [
        ("patient001_frame01", "0"), ("patient001_frame12", "0"), ("patient003_frame01", "0"),
        ("patient003_frame12", "0"), ("patient002_frame01", "1"), ("patient002_frame12", "1"),
        ("patient004_frame01", "1")]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["counts"]["scored"] == 7
    for f in summary["folds"]:
        mine = [float(r["lv_pool_dice"]) for r in rows if r["fold"] == str(f["fold"])]
        assert f["structures"]["lv_pool"]["dice"] == pytest.approx(np.mean(mine))
        assert f["weights"] == str(run / f"fold{f['fold']}" / "model.pt")
    assert summary["folds"][0]["structures"]["lv_pool"]["dice"] == pytest.approx(0.5)
    assert summary["folds"][1]["structures"]["lv_pool"]["dice"] == 1.0
    md = (tmp_path / "r" / "results.md").read_text()
    assert "| 0 | 2 | 4 | 0.500 |" in md and "| 1 | 2 | 3 | 1.000 |" in md
    assert "Mean Dice per fold" in res.stdout
    # Predictions land in the layout PRED accepts.
    assert (tmp_path / "r" / "predictions" / "patient004_frame01" / "labels.nii.gz").is_file()


def test_cli_folds_errors_and_coverage_warning(acdc_like, tmp_path, monkeypatch):
    import bvmesh.pipeline

    data, truth = acdc_like
    monkeypatch.setattr(bvmesh.pipeline, "segment", FakeSegmenter(truth))
    runner = CliRunner()

    def invoke(run, k, out):
        return runner.invoke(app, ["evaluate", "--cases", str(data), "--weights", str(run),
                                   "--folds", str(k), "--labels", "acdc", "--device", "cpu",
                                   "--no-plots", "-o", str(tmp_path / out)])

    run = fold_run(tmp_path / "a", [["patient001"], ["patient002"]])
    res = invoke(run, 3, "r1")  # fold2 was never trained
    assert res.exit_code == 1 and str(run / "fold2" / "model.pt") in res.stderr
    assert "missing fold model" in res.stderr and not (tmp_path / "r1").exists()
    overlap = fold_run(tmp_path / "b", [["patient001", "patient002"], ["patient002"]])
    res = invoke(overlap, 2, "r2")
    assert res.exit_code == 1 and "both hold out 1 subject(s) (patient002)" in res.stderr
    res = invoke(run, 2, "r3")  # patient003 and patient004 held out by no fold
    assert res.exit_code == 0, res.output
    assert "2 of the 4 subjects" in res.stderr and "patient003, patient004" in res.stderr
    rows = read_csv(tmp_path / "r3" / "cases.csv")
    assert {r["case"][:10] for r in rows} == {"patient001", "patient002"}
    # Usage: --folds needs --cases and --weights RUN_DIR.
    assert runner.invoke(app, ["evaluate", "--cases", str(data), "--folds", "2"]).exit_code == 2
    assert runner.invoke(app, ["evaluate", str(data), str(data), "--held-out"]).exit_code == 2
    assert runner.invoke(app, ["evaluate", "--cases", str(data), "--weights", str(run),
                               "--folds", "1"]).exit_code == 2


def test_cli_held_out_runs_the_real_pipeline(acdc_like, tmp_path):
    """Without the stand-in: the real pipeline segments the held-out cases with the loaded
    model (a random one: whatever it finds is scored) and touches no other case."""
    data, _ = acdc_like
    weights = tiny_checkpoint(tmp_path / "w.pt", ["patient001"])
    res = CliRunner().invoke(app, ["evaluate", "--cases", str(data), "--weights", str(weights),
                                   "--held-out", "--labels", "acdc", "--device", "cpu",
                                   "--base-from-gt", "--no-propagation", "--no-plots",
                                   # a random model's labels are no anatomy: the rules may
                                   # rightly remove them all, leaving nothing to score
                                   "--no-plausibility", "-o", str(tmp_path / "r")])
    assert res.exit_code in (0, 1), res.output
    rows = read_csv(tmp_path / "r" / "cases.csv")
    assert [r["case"] for r in rows] == ["patient001_frame01", "patient001_frame12"]
    assert all(r["status"] == "ok" and r["segment_seconds"] != "n/a" for r in rows)
    # Each case's QC verdict, so a cross-validation tells how often QC flags a good case.
    assert all(r["qc"] in ("pass", "warn", "fail") for r in rows)
    assert all(r["qc"] == "pass" or r["qc_checks"] for r in rows)
    assert all(r["removed"] == "" for r in rows)  # what the plausibility rules took: off here
    # The base segment used beside the labels' own: given from the labels here.
    assert all(r["base_slice_pred"] == r["base_slice"] != "n/a" for r in rows)
    assert sorted(p.parent.name for p in (tmp_path / "r" / "predictions").glob("*/labels.nii.gz")) \
        == ["patient001_frame01", "patient001_frame12"]

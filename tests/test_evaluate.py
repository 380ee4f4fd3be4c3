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

    def fake_segment(path, *, model, device, propagation, base_slice):
        calls.append((path.name, model, propagation, base_slice))
        return SimpleNamespace(labels=heart(), volume=bio.load(path))

    results = list(ev.segment_and_score(pairs, labels="acdc", propagation=False,
                                        base_from_gt=True, save_dir=tmp_path / "pred",
                                        segment_fn=fake_segment, model="M"))
    assert calls == [("a.nii.gz", "M", False, 2)]
    a, b = results
    assert a.status == ev.OK and a.scores["lv_myo"]["dice"] == 1.0 and "rv_myo" not in a.scores
    assert a.segment_seconds >= 0 and b.status == ev.FAILED and "no image" in b.messages[0]
    # The saved prediction is in the layout PRED accepts, so it scores the same again.
    again = ev.evaluate(tmp_path / "pred", data, labels="acdc")
    assert {c.case: c.status for c in again.cases} == {"a": ev.OK, "b": ev.MISSING}
    assert again.cases[0].scores["lv_myo"]["dice"] == 1.0


def test_cli_usage_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["evaluate"]).exit_code == 2
    assert runner.invoke(app, ["evaluate", str(tmp_path), str(tmp_path), "--cases",
                               str(tmp_path)]).exit_code == 2

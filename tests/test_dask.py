"""`bvmesh segment --dask`: a cohort's cases as tasks on a Dask cluster (all on 127.0.0.1)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bvmesh.cases import CaseOutcome, Segmenter, run_cases

distributed = pytest.importorskip("distributed")

try:
    from test_cli_segment import invoke, leftovers, read_summary
except ImportError:
    from tests.test_cli_segment import invoke, leftovers, read_summary


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, as a small cluster would have."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as c:
        yield c


def test_dask_gives_the_same_cases_as_one_process(cluster, make_case, tiny_weights, tmp_path):
    cohort = tmp_path / "cohort"
    cases = {name: make_case(name, folder=cohort, seed=i) for i, name in enumerate("abc")}
    (cohort / "d.nii.gz").write_bytes(b"not an image")
    bases = tmp_path / "bases.csv"
    bases.write_text("".join(f"{n},{c.base_slice}\n" for n, c in cases.items()))
    runs = {}
    for where, extra in (("local", []), ("dask", ["--dask", cluster.scheduler_address])):
        out = tmp_path / where
        result = invoke([cohort, "-o", out, "--base-slices", bases, "--no-mesh", "--json", *extra],
                        tiny_weights, cases["a"].roi)
        assert result.exit_code == 1, result.stderr  # d failed, the others did not
        runs[where] = read_summary(out / "summary.csv")
        assert list(runs[where]) == ["a", "b", "c", "d"]  # input order, however they finished
    for name in "abc":
        one, two = (nib.load(str(tmp_path / w / name / "labels.nii.gz")) for w in ("local", "dask"))
        np.testing.assert_array_equal(np.asarray(one.dataobj), np.asarray(two.dataobj))
        assert runs["dask"][name]["status"] == "ok"
        assert runs["dask"][name]["lv_pool_ml"] == runs["local"][name]["lv_pool_ml"]
    assert runs["dask"]["d"]["status"] == "failed" and "d.nii.gz" in runs["dask"]["d"]["message"]
    assert leftovers(tmp_path) == []


class _Crashing(Segmenter):
    """A segmenter with a bug: every case raises something that is no bvmesh error."""

    def __call__(self, path, base_slice=None):
        raise RuntimeError(f"bug while reading {path}")


def test_a_task_that_crashes_is_a_failed_case_and_the_others_go_on(make_case, tmp_path):
    case = make_case("a", folder=tmp_path / "in")
    outcomes: list[CaseOutcome] = []
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as c:
        run_cases([case.path, case.path.with_name("b.nii.gz")], ["a", "b"], tmp_path / "out",
                  _Crashing(), outcomes, base_slices=None, base_slice=None, skip_existing=False,
                  probabilities=False, mesh=None, on_case=None, alone=False,
                  dask=c.scheduler_address)
    assert [o.case for o in outcomes] == ["a", "b"]
    assert all(o.status == "failed" and "RuntimeError" in o.message for o in outcomes)


def test_workers_and_dask_together_are_bad_usage(make_case, tiny_weights, tmp_path):
    case = make_case()
    result = invoke([case.path, "-o", tmp_path / "out", "--workers", 2, "--dask",
                     "tcp://127.0.0.1:1"], tiny_weights)
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_relative_weights_and_paths_reach_the_workers(cluster, make_case, tiny_weights, tmp_path,
                                                      monkeypatch):
    """The workers started elsewhere (their own working directory): a relative weights
    file and relative inputs must still be found."""
    import shutil

    case = make_case("rel", folder=tmp_path / "in")
    shutil.copy(tiny_weights, tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    result = invoke(["in/rel.nii.gz", "-o", "out", "--no-mesh", "--base-slice", case.base_slice,
                     "--dask", cluster.scheduler_address, "--shard", "0/1"], "w.pt", case.roi)
    assert result.exit_code in (0, 4), result.stderr  # random weights may fail QC (4), not run
    assert read_summary(tmp_path / "out" / "summary.shard-0-of-1.csv")["rel"]["status"] == "ok"
    assert (tmp_path / "out" / "rel" / "labels.nii.gz").is_file()

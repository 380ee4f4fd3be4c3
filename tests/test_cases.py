"""bvmesh.cases: a cohort's Segmenter loads its model once per process, and again only
when the weights file changed."""

from __future__ import annotations

import os
import pickle
import shutil

from bvmesh.cases import Segmenter


def test_segmenter_keeps_its_model_until_the_file_changes(tiny_weights, tmp_path):
    path = shutil.copy(tiny_weights, tmp_path / "w.pt")
    segmenter = Segmenter(weights=str(path), device="cpu")
    first = segmenter.model()
    assert segmenter.model() is first
    assert pickle.loads(pickle.dumps(segmenter)).model() is first  # what a worker receives
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # retrained in place
    assert segmenter.model() is not first


def test_auto_workers_use_the_cores_for_a_cohort_as_memory_allows(monkeypatch):
    from bvmesh import cases

    monkeypatch.setattr(cases.os, "cpu_count", lambda: 16)
    pages = {"SC_PHYS_PAGES": 4 * 2**30 // 4096, "SC_PAGE_SIZE": 4096}  # 4 GB
    monkeypatch.setattr(cases.os, "sysconf", lambda name: pages[name])
    assert cases.auto_workers(cases.AUTO_WORKERS_MIN_CASES - 1) == 1  # start-up not won back
    assert cases.auto_workers(100) == 4 * 1024 // cases.WORKER_MB  # memory-bound: 2
    pages["SC_PHYS_PAGES"] = 64 * 2**30 // 4096
    assert cases.auto_workers(100) == 16  # core-bound
    assert cases.auto_workers(9) == 9  # never more processes than cases

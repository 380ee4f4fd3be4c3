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

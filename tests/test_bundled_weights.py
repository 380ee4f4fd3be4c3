"""The weights that ship in the package: present, pinned, loadable, and usable end to end.

Quality is measured by cross-validation (docs/model-card.md), not here; this checks that
what users get by default is the file the registry describes and that it runs.
"""

from __future__ import annotations

import numpy as np

from bvmesh.labels import CLASS_NAMES
from bvmesh.model import load_model
from bvmesh.weights import DEFAULT_MODEL, REGISTRY, file_sha256, resolve


def test_bundled_file_matches_its_registry_entry():
    entry = REGISTRY[DEFAULT_MODEL]
    assert entry.bundled
    assert entry.sha256 is not None, "the bundled model must be pinned by its SHA-256"
    resolved = resolve(None)
    assert resolved.source == "bundled"
    assert resolved.path.stat().st_size == entry.size
    assert file_sha256(resolved.path, memo=False) == entry.sha256


def test_bundled_model_loads_with_its_recorded_classes():
    model = load_model(resolve(None).path)
    assert model.classes == REGISTRY[DEFAULT_MODEL].classes
    assert set(model.classes) <= set(CLASS_NAMES)
    assert model.record.get("iterations", 0) > 0


def test_bundled_model_segments_a_phantom(make_case):
    import bvmesh

    case = make_case("bundled", spacing=(1.5, 1.5, 10.0))
    result = bvmesh.segment(case.path, base_slice=case.base_slice, roi=case.roi, device="cpu")
    assert result.labels.shape == case.image.shape
    assert result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1, 2, 3, 4}
    assert result.report["weights"]["sha256"] == REGISTRY[DEFAULT_MODEL].sha256


def test_bundled_model_finds_the_heart_of_the_shipped_example():
    """A broken default model (all background, a flipped axis, the wrong file) fails here:
    the example is a real heart-failure scan (Sunnybrook SC-HF-I-6), segmented with nothing
    given, and its volumes must be those of a dilated adult heart."""
    import bvmesh
    from bvmesh.examples import EXAMPLE

    result = bvmesh.segment(EXAMPLE, device="cpu")
    m = result.report["measurements"]
    assert 100 < m["lv_pool_ml"] < 350  # dilated LV: larger than the normal 60-200 ml
    assert 80 < m["lv_myo_ml"] < 250
    assert 40 < m["rv_pool_ml"] < 300
    assert result.report["qc"]["verdict"] != "fail", result.report["qc"]


def test_load_model_takes_a_name_or_a_path_and_records_where_it_came_from(tmp_path):
    import shutil

    import bvmesh

    by_name = bvmesh.load_model(DEFAULT_MODEL, device="cpu")
    assert by_name.source["sha256"] == REGISTRY[DEFAULT_MODEL].sha256
    assert by_name.source["source"] == "bundled"
    copy = shutil.copy(resolve(None).path, tmp_path / "mine.pt")
    by_path = bvmesh.load_model(str(copy), device="cpu")
    assert by_path.source["path"] == str(copy.resolve())
    assert by_path.source["sha256"] == REGISTRY[DEFAULT_MODEL].sha256
    # The file-level loader records its file too (report.json's "weights" was {}).
    assert load_model(copy).source["sha256"] == REGISTRY[DEFAULT_MODEL].sha256

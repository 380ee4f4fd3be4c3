"""`bvmesh weights ...` through typer's CliRunner, the registry's shape, and import cost.

The registry is replaced by a test registry served from 127.0.0.1, so the end-to-end test
(download on a fresh cache, then resolve offline) exercises exactly what a user does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner
from weights_testserver import WeightsServer, closed_port_url, entry, leftovers, payload, sha

from bvmesh.cli.weights import register
from bvmesh.weights import cache as wcache
from bvmesh.weights import registry as wreg
from bvmesh.weights import resolve

ROOT = Path(__file__).resolve().parents[1]


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root: only the weights group is registered."""

    register(app)
    return app


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("BVMESH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BVMESH_OFFLINE", raising=False)
    monkeypatch.setattr(wreg, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.setattr(wcache, "_PROCESS_MEMO", {})
    app, runner = make_app(), CliRunner()
    return lambda *args: runner.invoke(app, ["weights", *map(str, args)])


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A registry of one bundled model (file present) and one downloadable from 127.0.0.1."""
    data = payload()
    (tmp_path / "bundled").mkdir()
    (tmp_path / "bundled" / "tb-v1.pt").write_bytes(b"bundled bytes")
    with WeightsServer() as server:
        reg = {"tb-v1": entry("tb-v1", b"bundled bytes", (closed_port_url(),), bundled=True),
               "tm-v1": entry("tm-v1", data, (server.add("/tm-v1.pt", data),))}
        monkeypatch.setattr(wreg, "REGISTRY", reg)
        monkeypatch.setattr(wreg, "DEFAULT_MODEL", "tb-v1")
        yield server, data


def test_end_to_end_download_then_resolve_offline(cli, served, tmp_path):
    server, data = served
    fresh = tmp_path / "fresh"
    r = cli("download", "tm-v1", "--cache-dir", fresh)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(fresh / "tm-v1.pt")
    rw = resolve("tm-v1", offline=True, cache_dir=fresh)
    assert (rw.path, rw.name, rw.sha256, rw.source) == (fresh / "tm-v1.pt", "tm-v1", sha(data),
                                                        "cache")
    assert server.hits["/tm-v1.pt"] == 1
    # Again: already there, no second transfer.
    r = cli("download", "tm-v1", "--cache-dir", fresh)
    assert r.exit_code == 0 and "already in the cache" in r.stderr
    assert server.hits["/tm-v1.pt"] == 1
    r = cli("path", "tm-v1", "--cache-dir", fresh)
    assert r.exit_code == 0 and r.stdout.strip() == str(fresh / "tm-v1.pt")


def test_list_shows_bundled_and_installed(cli, served, tmp_path):
    r = cli("list")
    assert r.exit_code == 0, r.output
    assert "tb-v1 (default)" in r.stdout and "bundled" in r.stdout
    assert "tm-v1" in r.stdout and "not installed" in r.stdout
    cli("download", "tm-v1")
    rows = json.loads(cli("list", "--json").stdout)
    assert [(x["name"], x["installed"], x["default"]) for x in rows] == [
        ("tb-v1", "bundled", True), ("tm-v1", "cache", False)]
    assert rows[1]["path"] == str(tmp_path / "cache" / "tm-v1.pt")


def test_path_prints_cache_folder(cli, tmp_path):
    assert cli("path").stdout.strip() == str(tmp_path / "cache")
    assert cli("path", "--cache-dir", tmp_path / "x").stdout.strip() == str(tmp_path / "x")


def test_download_failure_is_one_clear_line(cli, served, tmp_path):
    server, data = served
    server.add("/tm-v1.pt", data, send=100)  # truncated transfer
    r = cli("download", "tm-v1", "--quiet")
    assert r.exit_code == 1
    assert "error:" in r.stderr and "cut short" in r.stderr and "Traceback" not in r.output
    assert r.stdout == "" and leftovers(tmp_path) == []
    assert not (tmp_path / "cache" / "tm-v1.pt").exists()


def test_download_refused_offline(cli, served, monkeypatch):
    server, _ = served
    monkeypatch.setenv("BVMESH_OFFLINE", "1")
    r = cli("download", "tm-v1")
    assert r.exit_code == 1 and "BVMESH_OFFLINE" in r.stderr
    r = cli("download", "nope")
    assert r.exit_code == 1 and "not a registered model" in r.stderr
    assert sum(server.hits.values()) == 0


def test_offline_path_says_how_to_fix(cli, served):
    r = cli("path", "tm-v1")
    assert r.exit_code == 1
    assert "bvmesh weights download tm-v1" in r.stderr and "bvmesh weights install" in r.stderr


def test_install_then_verify(cli, served, tmp_path):
    server, data = served
    carried = tmp_path / "carried.pt"
    carried.write_bytes(data)
    r = cli("install", carried)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(tmp_path / "cache" / "tm-v1.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[:10])
    r = cli("install", bad, "--name", "tm-v1")
    assert r.exit_code == 1 and "is not model tm-v1" in r.stderr
    r = cli("verify")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("ok") >= 2  # the bundled file and the cached one
    statuses = {(c["name"], c["status"]) for c in json.loads(cli("verify", "--json").stdout)}
    assert statuses == {("tb-v1", "ok"), ("tm-v1", "ok")}

    cached = tmp_path / "cache" / "tm-v1.pt"
    cached.write_bytes(data[:-1])
    r = cli("verify")
    assert r.exit_code == 1
    assert "mismatch" in r.stdout and "1 of 2 weights files failed" in r.stderr
    assert sum(server.hits.values()) == 0


def test_verify_empty_cache(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(wreg, "REGISTRY", {})
    r = cli("verify")
    assert r.exit_code == 0 and "no weights files" in r.stderr


# --- the real registry and import cost ---------------------------------------------------

def test_real_registry_is_well_formed():
    reg = wreg.REGISTRY
    assert wreg.DEFAULT_MODEL == "bvmesh-acdc-v4" and wreg.DEFAULT_MODEL in reg
    default = reg[wreg.DEFAULT_MODEL]
    assert default.bundled and default.file == "bvmesh-acdc-v4.pt"
    assert default.classes == ("lv_pool", "lv_myo", "rv_pool")
    assert default.licence == "CC-BY-NC-SA-4.0"
    assert default.urls and all(u.startswith("https://") and u.endswith(default.file)
                                for u in default.urls)
    for e in reg.values():
        assert e.name == next(k for k, v in reg.items() if v is e)
        assert e.sha256 is not None or e.bundled
        assert (e.sha256 is None) == (e.size is None)  # hash and size are pinned together
    assert wreg.BUNDLED_DIR == Path(wreg.__file__).resolve().parent


@pytest.mark.parametrize("kw", [{"sha256": "ABC"}, {"sha256": None}, {"name": "../x"},
                                {"file": "a/b.pt"}, {"size": 0}])
def test_registry_rejects_bad_entries(kw):
    good = dict(name="m", version="1", file="m.pt", urls=("https://h/m.pt",), sha256="a" * 64,
                size=1, classes=(), training_data="", licence="MIT", description="")
    with pytest.raises(ValueError):
        wreg.ModelEntry(**{**good, **kw})
    wreg.ModelEntry(**good)  # and the unmodified entry is fine


def test_weights_cli_imports_neither_torch_nor_urllib():
    code = ("import sys, bvmesh.weights, bvmesh.cli.weights; "
            "print(sorted(m for m in ('torch', 'numpy', 'urllib.request', 'ssl') "
            "if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert out.strip() == "[]"

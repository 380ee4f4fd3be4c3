"""bvmesh.weights: cache, hash-once memo, download failures, resolve, install, verify.

Every network test talks to a server on 127.0.0.1 started here; registries and the bundled
folder are the test's own, so nothing depends on the real bundled model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from weights_testserver import WeightsServer, closed_port_url, entry, leftovers, payload, sha

from bvmesh.errors import WeightsError
from bvmesh.weights import (
    ModelEntry,
    ResolvedWeights,
    file_sha256,
    install,
    inventory,
    resolve,
    verify,
)
from bvmesh.weights import cache as wcache
from bvmesh.weights import registry as wreg
from bvmesh.weights.download import download

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    with WeightsServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # No test may see the user's cache, offline setting or the real bundled folder.
    monkeypatch.setenv("BVMESH_CACHE_DIR", str(tmp_path / "envcache"))
    monkeypatch.delenv("BVMESH_OFFLINE", raising=False)
    monkeypatch.delenv("BVMESH_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.setattr(wreg, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.setattr(wcache, "_PROCESS_MEMO", {})


def count_hashes(monkeypatch) -> list[Path]:
    """Record every full read-and-hash of a file."""
    calls: list[Path] = []
    real = wcache.hash_file

    def counting(path, on_bytes=None):
        calls.append(Path(path))
        return real(path, on_bytes)

    monkeypatch.setattr(wcache, "hash_file", counting)
    return calls


# --- cache folder, offline flag, hash memo ------------------------------------------------

def test_cache_dir_precedence(tmp_path, monkeypatch):
    assert wcache.cache_dir(tmp_path / "x") == tmp_path / "x"
    assert wcache.cache_dir() == tmp_path / "envcache"
    monkeypatch.delenv("BVMESH_CACHE_DIR")
    import platformdirs

    assert wcache.cache_dir() == platformdirs.user_cache_path("bvmesh") / "weights"


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("YES", True),
                                                 ("0", False), ("", False), ("no", False)])
def test_offline_env(monkeypatch, value, expected):
    monkeypatch.setenv("BVMESH_OFFLINE", value)
    assert wcache.is_offline() is expected
    assert wcache.is_offline(False) is False  # an explicit flag wins over the environment


def test_hash_once_per_file_change(tmp_path, monkeypatch):
    f = tmp_path / "m.pt"
    f.write_bytes(payload(5000))
    calls = count_hashes(monkeypatch)
    assert file_sha256(f) == sha(payload(5000))
    memo = json.loads(wcache.memo_path(f).read_text())
    assert memo["sha256"] == sha(payload(5000)) and memo["size"] == 5000
    wcache._PROCESS_MEMO.clear()  # as a new process would start
    assert file_sha256(f) == sha(payload(5000))
    assert len(calls) == 1  # the second answer came from the sidecar

    f.write_bytes(payload(6000))  # a changed file is hashed again
    assert file_sha256(f) == sha(payload(6000))
    assert len(calls) == 2
    assert file_sha256(f, force=True) == sha(payload(6000))
    assert len(calls) == 3


def test_memo_is_trusted_only_for_the_same_stat(tmp_path):
    f = tmp_path / "m.pt"
    f.write_bytes(b"abc")
    file_sha256(f)
    memo = json.loads(wcache.memo_path(f).read_text())
    memo["sha256"] = "0" * 64  # a memo says what it says while the stat matches...
    wcache.memo_path(f).write_text(json.dumps(memo))
    wcache._PROCESS_MEMO.clear()
    assert file_sha256(f) == "0" * 64
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # ...and not after a touch
    assert file_sha256(f) == sha(b"abc")


# --- download ----------------------------------------------------------------------------

def test_download_success_streams_and_records_hash(tmp_path, server):
    data = payload()
    url = server.add("/m.pt", data)
    dst = tmp_path / "c" / "m.pt"
    assert download(url, dst, sha256=sha(data), size=len(data)) == sha(data)
    assert dst.read_bytes() == data
    assert wcache.read_memo(dst) == sha(data)
    assert leftovers(tmp_path) == []
    # A good file is not fetched again; force does.
    download(url, dst, sha256=sha(data))
    assert server.hits["/m.pt"] == 1
    download(url, dst, sha256=sha(data), force=True)
    assert server.hits["/m.pt"] == 2


def test_download_progress_bar_goes_to_stderr(tmp_path, server, capsys):
    data = payload()
    download(server.add("/m.pt", data), tmp_path / "m.pt", sha256=sha(data), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "m.pt" in captured.err


def test_download_file_url(tmp_path):
    data = payload(1234)
    src = tmp_path / "src" / "m v1.pt"
    src.parent.mkdir()
    src.write_bytes(data)
    dst = tmp_path / "c" / "m.pt"
    assert download(src.as_uri(), dst, sha256=sha(data)) == sha(data)
    assert dst.read_bytes() == data


def test_download_wrong_hash_is_discarded(tmp_path, server):
    data = payload()
    url = server.add("/m.pt", data)
    dst = tmp_path / "m.pt"
    with pytest.raises(WeightsError) as exc:
        download(url, dst, sha256="a" * 64)
    msg = str(exc.value)
    assert url in msg and str(dst) in msg and "a" * 64 in msg and sha(data) in msg
    assert "bvmesh weights install" in msg
    assert not dst.exists() and leftovers(tmp_path) == []


def test_download_truncated_transfer(tmp_path, server):
    data = payload()
    url = server.add("/m.pt", data, send=len(data) // 3)
    dst = tmp_path / "m.pt"
    with pytest.raises(WeightsError, match=f"cut short after {len(data) // 3} of {len(data)}"):
        download(url, dst, sha256=sha(data))
    assert not dst.exists() and leftovers(tmp_path) == []


def test_download_announced_size_differs_from_registry(tmp_path, server):
    data = payload()
    url = server.add("/m.pt", data)
    with pytest.raises(WeightsError, match="another file"):
        download(url, tmp_path / "m.pt", sha256=sha(data), size=len(data) + 1)
    assert list(tmp_path.glob("m.pt*")) == []


@pytest.mark.parametrize("status", [404, 500])
def test_download_http_error(tmp_path, server, status):
    url = server.add("/m.pt", status=status)
    with pytest.raises(WeightsError, match=f"HTTP {status}") as exc:
        download(url, tmp_path / "m.pt", sha256="a" * 64)
    assert url in str(exc.value)
    assert list(tmp_path.glob("m.pt*")) == []


def test_download_stalled_server_times_out(tmp_path, server):
    url = server.add("/m.pt", payload(), stall=30)
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match="no data for 0.3 s") as exc:
        download(url, tmp_path / "m.pt", sha256="a" * 64, timeout=0.3)
    assert time.monotonic() - t0 < 10
    assert "BVMESH_DOWNLOAD_TIMEOUT" in str(exc.value)
    assert list(tmp_path.glob("m.pt*")) == []


def test_download_timeout_from_environment(tmp_path, server, monkeypatch):
    monkeypatch.setenv("BVMESH_DOWNLOAD_TIMEOUT", "0.2")
    url = server.add("/m.pt", payload(), stall=30)
    with pytest.raises(WeightsError, match="no data for 0.2 s"):
        download(url, tmp_path / "m.pt")
    monkeypatch.setenv("BVMESH_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(WeightsError, match="BVMESH_DOWNLOAD_TIMEOUT"):
        download(url, tmp_path / "m.pt")


def test_download_unreachable(tmp_path):
    url = closed_port_url()
    with pytest.raises(WeightsError, match="cannot reach") as exc:
        download(url, tmp_path / "m.pt", sha256="a" * 64)
    assert "HTTPS_PROXY" in str(exc.value)
    assert list(tmp_path.glob("m.pt*")) == []


def test_download_falls_back_to_next_mirror(tmp_path, server):
    data = payload()
    bad, good = server.add("/a/m.pt", status=500), server.add("/b/m.pt", data)
    dst = tmp_path / "m.pt"
    assert download([bad, good], dst, sha256=sha(data)) == sha(data)
    with pytest.raises(WeightsError, match="every mirror failed") as exc:
        download([bad, server.url("/none.pt")], dst, sha256=sha(data), force=True)
    assert "HTTP 500" in str(exc.value) and "HTTP 404" in str(exc.value)
    assert dst.read_bytes() == data  # a failed forced refresh keeps the good file


def test_download_removes_partials_of_killed_processes(tmp_path, server):
    data = payload()
    stale = tmp_path / "m.pt.deadbeef.partial"
    stale.write_bytes(b"half")
    download(server.add("/m.pt", data), tmp_path / "m.pt", sha256=sha(data))
    assert not stale.exists()


def test_concurrent_downloads_threads(tmp_path, server):
    data = payload(400_000)
    url = server.add("/m.pt", data, chunk_delay=0.01)
    dst = tmp_path / "m.pt"
    results, errors = [], []

    def worker():
        try:
            results.append(download(url, dst, sha256=sha(data)))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and results == [sha(data)] * 4
    assert server.hits["/m.pt"] == 1  # the others waited on the lock and found the file
    assert dst.read_bytes() == data and leftovers(tmp_path) == []


def test_concurrent_downloads_processes(tmp_path, server):
    # Two real processes, as two jobs of a cluster cohort sharing one cache would be.
    data = payload(400_000)
    url = server.add("/m.pt", data, chunk_delay=0.02)  # ~0.5 s transfer: the two overlap
    dst = tmp_path / "cache" / "m.pt"
    code = ("import sys; from bvmesh.weights.download import download; "
            "print(download(sys.argv[1], sys.argv[2], sha256=sys.argv[3]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(dst), sha(data)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == [sha(data)] * 2
    assert dst.read_bytes() == data and leftovers(tmp_path) == []
    assert server.hits["/m.pt"] == 1


# --- resolve -----------------------------------------------------------------------------

def make_registry(server, data: bytes, name: str = "tm-v1", **kw) -> dict[str, ModelEntry]:
    e = entry(name, data, (server.url(f"/{name}.pt"),), **kw)
    server.add(f"/{name}.pt", data)
    return {name: e}


def test_resolve_default_is_bundled_and_needs_no_network(tmp_path, monkeypatch):
    data = payload()
    reg = {"tm-v1": entry("tm-v1", data, (closed_port_url(),), bundled=True)}
    monkeypatch.setattr(wreg, "DEFAULT_MODEL", "tm-v1")
    (tmp_path / "bundled").mkdir()
    (tmp_path / "bundled" / "tm-v1.pt").write_bytes(data)
    rw = resolve(None, registry=reg, offline=True)
    assert rw == ResolvedWeights(tmp_path / "bundled" / "tm-v1.pt", "tm-v1", sha(data), "bundled")
    assert not (tmp_path / "envcache").exists()  # nothing written anywhere
    assert list((tmp_path / "bundled").iterdir()) == [tmp_path / "bundled" / "tm-v1.pt"]


def test_resolve_bundled_damaged_or_unpinned(tmp_path):
    data = payload()
    (tmp_path / "bundled").mkdir()
    (tmp_path / "bundled" / "tm-v1.pt").write_bytes(data[:-1])
    reg = {"tm-v1": entry("tm-v1", data, (closed_port_url(),), bundled=True)}
    with pytest.raises(WeightsError, match="reinstall bvmesh"):
        resolve("tm-v1", registry=reg)
    unpinned = {"tm-v1": entry("tm-v1", data, (closed_port_url(),), bundled=True, pinned=False)}
    assert resolve("tm-v1", registry=unpinned).sha256 == sha(data[:-1])


def test_resolve_bundled_missing_falls_back_to_download(tmp_path, server):
    data = payload()
    reg = make_registry(server, data, bundled=True)
    rw = resolve("tm-v1", registry=reg)
    assert rw.source == "download" and rw.path == tmp_path / "envcache" / "tm-v1.pt"


def test_resolve_name_downloads_once_then_uses_cache(tmp_path, server, monkeypatch):
    data = payload()
    reg = make_registry(server, data)
    rw = resolve("tm-v1", registry=reg, cache_dir=tmp_path / "c")
    assert rw == ResolvedWeights(tmp_path / "c" / "tm-v1.pt", "tm-v1", sha(data), "download")
    wcache._PROCESS_MEMO.clear()
    calls = count_hashes(monkeypatch)
    rw2 = resolve("tm-v1", registry=reg, cache_dir=tmp_path / "c")
    assert rw2.source == "cache" and rw2.sha256 == sha(data)
    assert calls == []  # verified through the memo: hashed once per file change
    assert server.hits["/tm-v1.pt"] == 1


def test_resolve_damaged_cache_file(tmp_path, server):
    data = payload()
    reg = make_registry(server, data)
    cached = resolve("tm-v1", registry=reg).path
    cached.write_bytes(data[:1000])  # truncated by a full disk, say
    with pytest.raises(WeightsError, match="download tm-v1 --force") as exc:
        resolve("tm-v1", registry=reg)
    assert str(cached) in str(exc.value)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_resolve_offline_never_touches_network(tmp_path, server, monkeypatch, how):
    data = payload()
    reg = make_registry(server, data)
    if how == "environment":
        monkeypatch.setenv("BVMESH_OFFLINE", "1")
    with pytest.raises(WeightsError) as exc:
        resolve("tm-v1", registry=reg, offline=True if how == "argument" else None)
    msg = str(exc.value)
    assert "offline" in msg and str(tmp_path / "envcache" / "tm-v1.pt") in msg
    assert "bvmesh weights download tm-v1" in msg and "bvmesh weights install FILE" in msg
    assert sum(server.hits.values()) == 0
    with pytest.raises(WeightsError, match="offline"):
        resolve(server.url("/tm-v1.pt") + "x", registry=reg, offline=True)
    assert sum(server.hits.values()) == 0


def test_resolve_local_path(tmp_path, server):
    data = payload()
    reg = make_registry(server, data)
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"my own fine-tuned model")
    rw = resolve(str(mine), registry=reg)
    assert rw == ResolvedWeights(mine, None, sha(b"my own fine-tuned model"), "path")
    assert not wcache.memo_path(mine).exists()  # no sidecars in the user's folders
    copy = tmp_path / "copy.pt"
    copy.write_bytes(data)
    assert resolve(copy, registry=reg).name == "tm-v1"  # recognised by hash
    named = tmp_path / "tm-v1.pt"
    named.write_bytes(data[:-10])  # a truncated copy under the registered file name
    with pytest.raises(WeightsError, match="truncated or damaged copy"):
        resolve(named, registry=reg)
    with pytest.raises(WeightsError, match="no such file"):
        resolve(tmp_path / "absent.pt", registry=reg)
    with pytest.raises(WeightsError, match="folder"):
        resolve(str(tmp_path), registry=reg)
    assert sum(server.hits.values()) == 0


def test_resolve_unknown_spec_lists_models(server):
    reg = make_registry(server, payload())
    with pytest.raises(WeightsError, match="known: tm-v1"):
        resolve("tm-v9", registry=reg)
    with pytest.raises(WeightsError, match="empty"):
        resolve("  ", registry=reg)


def test_resolve_url(tmp_path, server):
    data = payload()
    reg = make_registry(server, data)
    other = payload(2000, seed=7)
    url = server.add("/x/other.pt", other)
    rw = resolve(url, registry=reg)
    assert rw.source == "download" and rw.name is None and rw.path.name == "other.pt"
    assert rw.path.parent.parent == tmp_path / "envcache" / "url"
    assert resolve(url, registry=reg, offline=True).source == "cache"
    assert server.hits["/x/other.pt"] == 1
    with pytest.raises(WeightsError, match="expected " + "b" * 64):
        resolve(server.add("/y/other.pt", other) + "#sha256=" + "b" * 64, registry=reg)
    assert leftovers(tmp_path) == []
    with pytest.raises(WeightsError, match="fragment"):
        resolve(url + "#md5=00", registry=reg)
    # A registered URL is that model, stored under its registry file name and hash-checked.
    rw = resolve(server.url("/tm-v1.pt"), registry=reg)
    assert rw.name == "tm-v1" and rw.path == tmp_path / "envcache" / "tm-v1.pt"


# --- install, verify, inventory ----------------------------------------------------------

def test_install_registered_file(tmp_path, server):
    data = payload()
    reg = make_registry(server, data)
    carried = tmp_path / "usb" / "whatever.pt"
    carried.parent.mkdir()
    carried.write_bytes(data)
    rw = install(carried, registry=reg)  # recognised by hash
    assert rw.path == tmp_path / "envcache" / "tm-v1.pt" and rw.name == "tm-v1"
    assert resolve("tm-v1", registry=reg, offline=True).source == "cache"
    assert install(carried, name="tm-v1", registry=reg).path == rw.path
    assert leftovers(tmp_path) == []
    assert sum(server.hits.values()) == 0


def test_install_rejects_wrong_file(tmp_path, server):
    data = payload()
    reg = make_registry(server, data)
    bad = tmp_path / "tm-v1.pt"
    bad.write_bytes(data[:-1])
    with pytest.raises(WeightsError, match="is not model tm-v1"):
        install(bad, name="tm-v1", registry=reg)
    with pytest.raises(WeightsError, match="truncated or damaged"):
        install(bad, registry=reg)
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="--name NAME"):
        install(other, registry=reg)
    with pytest.raises(WeightsError, match="--name"):
        install(other, name="../evil", registry=reg)
    with pytest.raises(WeightsError, match="no such file"):
        install(tmp_path / "absent.pt", registry=reg)
    cache = tmp_path / "envcache"
    assert leftovers(tmp_path) == [] and not (cache / "tm-v1.pt").exists()


def checkpoint_bytes(seed: int) -> bytes:
    """A real (tiny, random) bvmesh checkpoint."""
    import torch

    from bvmesh.model import build_model, save_checkpoint

    try:
        from conftest import TINY_CONFIG
    except ImportError:
        from tests.conftest import TINY_CONFIG

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        return save_checkpoint(build_model(TINY_CONFIG), Path(tmp) / "m.pt").read_bytes()


def test_install_local_model_by_name(tmp_path, server):
    reg = make_registry(server, payload())
    v1, v2 = checkpoint_bytes(0), checkpoint_bytes(1)
    mine = tmp_path / "mine.pt"
    mine.write_bytes(v1)
    rw = install(mine, name="lab-model", registry=reg)
    assert rw.path == tmp_path / "envcache" / "local" / "lab-model" / "mine.pt"
    assert resolve("lab-model", registry=reg, offline=True) == ResolvedWeights(
        rw.path, "lab-model", sha(v1), "cache")
    newer = tmp_path / "mine2.pt"
    newer.write_bytes(v2)
    install(newer, name="lab-model", registry=reg)  # replaces the earlier file
    assert resolve("lab-model", registry=reg).sha256 == sha(v2)
    names = [r["name"] for r in inventory(registry=reg)]
    assert names == ["tm-v1", "lab-model"]


def test_install_refuses_what_is_not_a_bvmesh_checkpoint(tmp_path, server):
    reg = make_registry(server, payload())
    junk = tmp_path / "random.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError, match="random.pt: not a readable bvmesh weights file"):
        install(junk, name="junk", registry=reg)
    assert not (tmp_path / "envcache" / "local" / "junk").exists()
    assert leftovers(tmp_path) == []


def test_verify_reports_and_catches_damage(tmp_path, server):
    data = payload()
    reg = make_registry(server, data)
    cached = resolve("tm-v1", registry=reg).path
    mine = tmp_path / "mine.pt"
    mine.write_bytes(checkpoint_bytes(0))
    local = install(mine, name="lab", registry=reg).path
    assert [(c.name, c.status) for c in verify(registry=reg)] == [("tm-v1", "ok"), ("lab", "ok")]
    # A file put into the cache by hand that is no model at all is not "ok".
    planted = tmp_path / "envcache" / "local" / "junk" / "random.pt"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"not a model")
    junk = [c for c in verify(registry=reg) if c.name == "junk"]
    assert [(c.status, c.ok) for c in junk] == [("not-a-model", False)]
    planted.unlink()

    # Flip bytes in place and restore the mtime: invisible to the memo, caught by verify.
    for path in (cached, local):
        st = path.stat()
        raw = bytearray(path.read_bytes())
        raw[0] ^= 0xFF
        path.write_bytes(bytes(raw))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    checks = verify(registry=reg)
    assert [(c.name, c.status, c.ok) for c in checks] == [("tm-v1", "mismatch", False),
                                                          ("lab", "mismatch", False)]
    assert sha(data) in checks[0].message and "--force" in checks[0].message


def test_inventory_shows_where_models_are(tmp_path, server):
    data = payload()
    reg = make_registry(server, data)
    reg["tb-v1"] = entry("tb-v1", b"bundled", (closed_port_url(),), bundled=True)
    (tmp_path / "bundled").mkdir()
    (tmp_path / "bundled" / "tb-v1.pt").write_bytes(b"bundled")
    rows = {r["name"]: r for r in inventory(registry=reg)}
    assert rows["tm-v1"]["installed"] is None and rows["tb-v1"]["installed"] == "bundled"
    resolve("tm-v1", registry=reg)
    rows = {r["name"]: r for r in inventory(registry=reg)}
    assert rows["tm-v1"]["installed"] == "cache"
    assert rows["tm-v1"]["path"] == str(tmp_path / "envcache" / "tm-v1.pt")


def test_resolve_bundled_missing_from_package_says_so(tmp_path, server):
    data = payload()
    reg = {"tm-v1": entry("tm-v1", data, (server.add("/tm-v1.pt", status=404),), bundled=True)}
    for offline in (True, False):
        with pytest.raises(WeightsError, match="missing from the package") as exc:
            resolve("tm-v1", registry=reg, offline=offline)
        assert str(tmp_path / "bundled" / "tm-v1.pt") in str(exc.value)
    assert "HTTP 404" in str(exc.value) and leftovers(tmp_path) == []

"""Turning what the user typed (`--weights`) into a verified file on disk, and managing the cache.

`resolve` is what the pipeline calls; `install`, `verify` and `inventory` back the
`bvmesh weights` commands. Only `resolve` and `fetch` may reach the network, only for a file
that is missing, and never in offline mode.

Longer than the other modules on purpose: resolving, installing and verifying share the
cache's layout and its write-then-rename protocol (safe for many cluster jobs at once),
which stays readable in one file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import WeightsError
from . import registry as _reg
from .cache import (
    PARTIAL_SUFFIX,
    file_lock,
    file_sha256,
    is_offline,
    read_memo_raw,
    write_memo,
)
from .cache import cache_dir as _cache_dir
from .registry import NAME_PATTERN, ModelEntry

_URL = re.compile(r"^(https?|file)://", re.IGNORECASE)
_HASH_FRAGMENT = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
LOCAL_DIR = "local"
URL_DIR = "url"


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file ready to load.

    Attributes:
        path: absolute path of the file.
        name: registered (or locally installed) model name, or None for an unknown file.
        sha256: hex SHA-256 of the file's bytes (checked against the registry where it has one).
        source: "bundled" (inside the package), "cache" (already in the cache folder),
            "download" (fetched by this call) or "path" (a file the user pointed at).
    """

    path: Path
    name: str | None
    sha256: str
    source: str


def resolve(spec: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
            offline: bool | None = None, progress: bool = False, timeout: float | None = None,
            registry: dict[str, ModelEntry] | None = None) -> ResolvedWeights:
    """Find (and if needed download) the weights file `spec` names, verified by SHA-256.

    `spec` is, in this order of precedence:

    - None: the default model (`DEFAULT_MODEL`), bundled in the package, no network needed;
    - a registered model name (`bvmesh weights list`): the bundled file, else the cached file,
      else downloaded into the cache (unless offline);
    - an existing file path (an `os.PathLike` is always a path; write `./NAME` for a file that
      shares a registered name). A file whose name is a registered file name must have that
      model's hash (a truncated copy is caught); any other file is accepted as is, its hash
      only reported (and `name` set if it equals a registered model's hash);
    - a name given to `bvmesh weights install FILE --name NAME`;
    - an http(s):// or file:// URL: downloaded once into `<cache>/url/`, then reused. A
      `#sha256=<hex>` fragment makes the download checked; a URL listed in the registry is
      treated as that model.

    A cached file is rehashed only when its (size, mtime_ns, inode) changed (see `cache`).

    Args:
        cache_dir: overrides $BVMESH_CACHE_DIR and the user cache folder.
        offline: never touch the network; None reads $BVMESH_OFFLINE.
        progress: draw a download progress bar on stderr.
        timeout: seconds per network operation (default $BVMESH_DOWNLOAD_TIMEOUT or 60).
        registry: the models known by name; defaults to `registry.REGISTRY`.

    Raises:
        WeightsError: unknown spec, missing file in offline mode, failed download, or a hash
            mismatch; the message names the file and what to do.
    """
    reg = _reg.current(registry)
    if spec is None:
        spec = _reg.DEFAULT_MODEL
        if spec not in reg:
            raise WeightsError(f"default model {spec!r} is not in the registry; pass --weights")
    if isinstance(spec, os.PathLike):
        return _resolve_path(Path(spec), reg)
    text = str(spec).strip()
    if not text:
        raise WeightsError("--weights is empty; give a model name, a file or a URL "
                           "(see `bvmesh weights list`)")
    cdir = _cache_dir(cache_dir)
    offline = is_offline(offline)
    if _URL.match(text):
        return _resolve_url(text, reg, cdir, offline, progress, timeout)
    if text in reg:
        return _resolve_entry(reg[text], cdir, offline, progress, timeout)
    path = Path(text).expanduser()
    if path.is_file():
        return _resolve_path(path, reg)
    local = _local_file(cdir, text)
    if local is not None:
        return ResolvedWeights(local, text, file_sha256(local), "cache")
    if path.exists():
        raise WeightsError(f"--weights {text}: is a folder, not a weights file")
    known = ", ".join(sorted(reg)) or "none"
    raise WeightsError(f"--weights {text}: not a registered model (known: {known}), not a model "
                       "installed with `bvmesh weights install`, not an existing file and not an "
                       "http(s):// or file:// URL; see `bvmesh weights list`")


def fetch(name: str, *, cache_dir: str | os.PathLike | None = None, force: bool = False,
          progress: bool = False, timeout: float | None = None,
          registry: dict[str, ModelEntry] | None = None) -> ResolvedWeights:
    """Download registered model `name` into the cache now (prefetch), even if it is bundled.

    Used by `bvmesh weights download` to prepare files to carry to an offline machine. A cached
    file with the right hash is kept unless `force`. Offline mode ($BVMESH_OFFLINE) is an error.
    """
    reg = _reg.current(registry)
    entry = reg.get(name)
    if entry is None:
        if _URL.match(name):
            return resolve(name, cache_dir=cache_dir, offline=None, progress=progress,
                           timeout=timeout, registry=reg)
        raise WeightsError(f"{name!r} is not a registered model (known: "
                           f"{', '.join(sorted(reg)) or 'none'}); see `bvmesh weights list`")
    if is_offline(None):
        raise WeightsError(f"{name}: BVMESH_OFFLINE is set, so nothing is downloaded; unset it to "
                           "download on this machine")
    from .download import download

    dst = _cache_dir(cache_dir) / entry.file
    existed = dst.is_file()
    digest = download(entry.urls, dst, sha256=entry.sha256, size=entry.size, timeout=timeout,
                      progress=progress, force=force)
    return ResolvedWeights(dst.absolute(), entry.name, digest,
                           "cache" if existed and not force else "download")


def _resolve_entry(entry: ModelEntry, cdir: Path, offline: bool, progress: bool,
                   timeout: float | None) -> ResolvedWeights:
    if entry.bundled:
        bundled = _reg.bundled_dir() / entry.file
        if bundled.is_file():
            # memo=False: never write beside the installed package (read-only, or a git tree).
            digest = file_sha256(bundled, memo=False)
            if entry.sha256 is not None and digest != entry.sha256:
                raise WeightsError(
                    f"{bundled}: bundled file of model {entry.name} has SHA-256 {digest}, "
                    f"expected {entry.sha256}; the installation is damaged: reinstall bvmesh "
                    "(pip install --force-reinstall bvmesh)")
            return ResolvedWeights(bundled, entry.name, digest, "bundled")
    cached = cdir / entry.file
    if cached.is_file():
        digest = file_sha256(cached)
        if entry.sha256 is not None and digest != entry.sha256:
            raise WeightsError(
                f"{cached}: cached file of model {entry.name} has SHA-256 {digest}, expected "
                f"{entry.sha256}; it is damaged or not this model. Run `bvmesh weights download "
                f"{entry.name} --force` (or delete the file, or `bvmesh weights install` a good "
                "copy)")
        return ResolvedWeights(cached.absolute(), entry.name, digest, "cache")
    # A bundled model missing from the package (a build without the file) says so first.
    missing = (f"the bundled file {_reg.bundled_dir() / entry.file} is missing from the package "
               "(reinstall bvmesh); " if entry.bundled else "")
    if offline:
        raise WeightsError(
            f"{missing}model {entry.name} is not in the weights cache ({cached}) and offline "
            "mode is on (--offline or BVMESH_OFFLINE), so it was not downloaded. On a machine "
            "with network "
            f"run `bvmesh weights download {entry.name}`, copy the file it prints here and run "
            "`bvmesh weights install FILE` (or point --cache-dir / BVMESH_CACHE_DIR at a folder "
            "holding it)")
    from .download import download

    try:
        digest = download(entry.urls, cached, sha256=entry.sha256, size=entry.size,
                          timeout=timeout, progress=progress)
    except WeightsError as exc:
        if missing:
            raise WeightsError(f"{missing}downloading it instead failed: {exc}") from None
        raise
    return ResolvedWeights(cached.absolute(), entry.name, digest, "download")


def _resolve_path(path: Path, reg: dict[str, ModelEntry]) -> ResolvedWeights:
    path = path.expanduser()
    if not path.is_file():
        what = "is a folder, not a weights file" if path.is_dir() else "no such file"
        raise WeightsError(f"{path}: {what}")
    # memo=False: a user's folder is theirs; no sidecars there (the in-process memo still helps).
    digest = file_sha256(path, memo=False)
    for entry in reg.values():
        if entry.file == path.name and entry.sha256 is not None and digest != entry.sha256:
            raise WeightsError(
                f"{path}: named like model {entry.name}'s file but its SHA-256 is {digest}, not "
                f"{entry.sha256} (size {path.stat().st_size} bytes, expected "
                f"{entry.size if entry.size is not None else 'unknown'}): a truncated or damaged "
                "copy. Download it again; if it is your own model, give it another file name")
    name = next((e.name for e in reg.values() if e.sha256 == digest), None)
    return ResolvedWeights(path.absolute(), name, digest, "path")


def _resolve_url(url: str, reg: dict[str, ModelEntry], cdir: Path, offline: bool,
                 progress: bool, timeout: float | None) -> ResolvedWeights:
    parts = urlsplit(url)
    bare = parts._replace(fragment="").geturl()
    expected = None
    if parts.fragment:
        m = _HASH_FRAGMENT.match(parts.fragment)
        if m is None:
            raise WeightsError(f"{url}: the only URL fragment understood is #sha256=<64 hex>")
        expected = m.group(1).lower()
    for entry in reg.values():
        if bare in entry.urls and (expected is None or expected == entry.sha256):
            return _resolve_entry(entry, cdir, offline, progress, timeout)
    file_name = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1]) or "weights"
    file_name = re.sub(r"[^A-Za-z0-9._-]", "_", file_name).lstrip(".") or "weights"
    # One folder per URL so that two URLs ending in the same file name never collide.
    dst = cdir / URL_DIR / hashlib.sha256(bare.encode()).hexdigest()[:16] / file_name
    source = "cache"
    if dst.is_file():
        digest = file_sha256(dst)
        if expected is not None and digest != expected:
            raise WeightsError(f"{dst}: cached copy of {bare} has SHA-256 {digest}, expected "
                               f"{expected}; delete the file to download it again")
    elif offline:
        raise WeightsError(f"{bare}: not in the weights cache ({dst}) and offline mode is on "
                           "(--offline or BVMESH_OFFLINE), so it was not downloaded; download the "
                           "file on a machine with network and pass its path to --weights")
    else:
        from .download import download

        digest = download([bare], dst, sha256=expected, timeout=timeout, progress=progress)
        source = "download"
    name = next((e.name for e in reg.values() if e.sha256 == digest), None)
    return ResolvedWeights(dst.absolute(), name, digest, source)


def _local_file(cdir: Path, name: str) -> Path | None:
    """The file installed under `name` with `install --name`, or None."""
    if not NAME_PATTERN.fullmatch(name):
        return None
    folder = cdir / LOCAL_DIR / name
    try:
        files = [p for p in folder.iterdir() if p.is_file() and _is_model_file(p)]
    except OSError:
        return None
    return files[0].absolute() if len(files) == 1 else None


def _is_model_file(path: Path) -> bool:
    n = path.name
    return not (n.startswith(".") or n.endswith(PARTIAL_SUFFIX) or n.endswith(".sha256.json")
                or n.endswith(".tmp"))


def install(file: str | os.PathLike, *, name: str | None = None,
            cache_dir: str | os.PathLike | None = None,
            registry: dict[str, ModelEntry] | None = None) -> ResolvedWeights:
    """Copy a weights file carried in by hand into the cache, checked against the registry.

    - `name` is a registered model: the file must have its hash; it becomes `<cache>/<file>`.
    - no `name`: the file must be a registered model (recognised by hash); else an error says
      to pass `name`.
    - `name` is not registered: the file is kept as a local model, `<cache>/local/<name>/<file>`,
      and `--weights name` finds it from then on (it replaces an earlier file of that name).

    The copy is hashed while it is written and renamed into place atomically, under the same
    lock downloads use.
    """
    reg = _reg.current(registry)
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsError(f"{src}: no such file" if not src.exists() else
                           f"{src}: is a folder, not a weights file")
    cdir = _cache_dir(cache_dir)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{cdir}: cannot create the weights cache folder "
                           f"({exc.strerror or exc}); choose another with --cache-dir") from exc
    if name is not None and name not in reg and not NAME_PATTERN.fullmatch(name):
        raise WeightsError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only, "
                           "starting with a letter or digit")
    tmp = cdir / f".install.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"
    try:
        digest = _copy_hashing(src, tmp)
        entry = _entry_for_install(src, digest, name, reg)
        if entry is None:
            _require_checkpoint(src)  # a registered file is vouched for by its hash
        if entry is not None:
            dst, label = cdir / entry.file, entry.name
        else:
            dst, label = cdir / LOCAL_DIR / name / src.name, name
        dst.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(dst):
            if entry is None:
                # A local name holds one file: the newest install replaces the old one.
                for old in dst.parent.iterdir():
                    if old.is_file() and old.name != dst.name and _is_model_file(old):
                        old.unlink()
                        Path(str(old) + ".sha256.json").unlink(missing_ok=True)
            os.replace(tmp, dst)
            write_memo(dst, digest)
    except OSError as exc:
        raise WeightsError(f"{src}: cannot copy into the weights cache {cdir} "
                           f"({exc.strerror or exc}); check free space and permissions") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return ResolvedWeights(dst.absolute(), label, digest, "cache")


def _require_checkpoint(path: Path) -> None:
    """Refuse a file that is not a loadable bvmesh checkpoint (raises WeightsError)."""
    from ..model import load_model

    load_model(path)


def _entry_for_install(src: Path, digest: str, name: str | None,
                       reg: dict[str, ModelEntry]) -> ModelEntry | None:
    if name is not None and name in reg:
        entry = reg[name]
        if entry.sha256 is not None and digest != entry.sha256:
            raise WeightsError(
                f"{src}: is not model {name}: SHA-256 {digest}, expected {entry.sha256} (size "
                f"{src.stat().st_size} bytes, expected "
                f"{entry.size if entry.size is not None else 'unknown'}); a truncated or damaged "
                f"copy? Compare `sha256sum {src.name}` on both machines")
        return entry
    by_hash = next((e for e in reg.values() if e.sha256 == digest), None)
    if by_hash is not None:
        return by_hash
    by_file = next((e for e in reg.values() if e.file == src.name and e.sha256), None)
    if by_file is not None and name is None:
        raise WeightsError(
            f"{src}: named like model {by_file.name}'s file but its SHA-256 is {digest}, not "
            f"{by_file.sha256}: a truncated or damaged copy. Copy it again; if it is your own "
            "model, install it with --name NAME")
    if name is None:
        raise WeightsError(f"{src}: SHA-256 {digest} matches no registered model; pass --name "
                           "NAME to keep it as a local model, or use --weights FILE directly")
    return None


def _copy_hashing(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
            h.update(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()


@dataclass(frozen=True)
class Check:
    """Outcome of verifying one file. `ok` is False only for a real failure."""

    path: Path
    name: str | None
    status: str  # "ok", "unpinned" (no registry hash), "mismatch", "unreadable", "not-a-model"
    expected: str | None
    actual: str | None
    message: str

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "unpinned")


def verify(*, cache_dir: str | os.PathLike | None = None,
           registry: dict[str, ModelEntry] | None = None) -> list[Check]:
    """Rehash every file (bundled, cached, local, URL-cached) ignoring memos; report each.

    Registered files are checked against the registry; local and URL files against the hash
    recorded when they were stored (that catches on-disk corruption, not a wrong source).
    """
    reg = _reg.current(registry)
    cdir = _cache_dir(cache_dir)
    checks: list[Check] = []
    for entry in reg.values():
        places = [(cdir / entry.file, True)]
        if entry.bundled:
            places.insert(0, (_reg.bundled_dir() / entry.file, False))
        for path, memo in places:
            if path.is_file():
                checks.append(_check(path, entry.name, entry.sha256, memo))
    for sub in (LOCAL_DIR, URL_DIR):
        base = cdir / sub
        if not base.is_dir():
            continue
        for path in sorted(base.glob("*/*")):
            if path.is_file() and _is_model_file(path):
                name = path.parent.name if sub == LOCAL_DIR else None
                check = _check(path, name, read_memo_raw(path), True)
                if check.ok:  # its hash is its own (or none): is it a model at all?
                    try:
                        _require_checkpoint(path)
                    except WeightsError as exc:
                        check = Check(path, name, "not-a-model", check.expected, check.actual,
                                      f"{exc}; remove it with `rm {path}`")
                checks.append(check)
    return checks


def _check(path: Path, name: str | None, expected: str | None, memo: bool) -> Check:
    try:
        actual = file_sha256(path, memo=False, force=True)
    except WeightsError as exc:
        return Check(path, name, "unreadable", expected, None, str(exc))
    if expected is None:
        if memo:
            write_memo(path, actual)
        return Check(path, name, "unpinned", None, actual,
                     f"{path}: SHA-256 {actual} (no reference hash to compare with)")
    if actual != expected:
        fix = (f"run `bvmesh weights download {name} --force`" if memo and name else
               "reinstall bvmesh" if not memo else "install it again")
        return Check(path, name, "mismatch", expected, actual,
                     f"{path}: SHA-256 {actual}, expected {expected}; {fix}")
    if memo:
        write_memo(path, actual)
    return Check(path, name, "ok", expected, actual, f"{path}: ok")


def inventory(*, cache_dir: str | os.PathLike | None = None,
              registry: dict[str, ModelEntry] | None = None) -> list[dict]:
    """Every known model with where it is installed; cheap (stat calls only, no hashing).

    Each dict is `ModelEntry.to_dict()` plus `installed` ("bundled", "cache" or None),
    `path` (str or None), `default` (bool) and `local` (bool, True for `install --name`).
    """
    reg = _reg.current(registry)
    cdir = _cache_dir(cache_dir)
    rows = []
    for entry in reg.values():
        row = entry.to_dict()
        bundled = _reg.bundled_dir() / entry.file
        cached = cdir / entry.file
        if entry.bundled and bundled.is_file():
            row.update(installed="bundled", path=str(bundled))
        elif cached.is_file():
            row.update(installed="cache", path=str(cached.absolute()))
        else:
            row.update(installed=None, path=None)
        row.update(default=entry.name == _reg.DEFAULT_MODEL, local=False)
        rows.append(row)
    local_base = cdir / LOCAL_DIR
    if local_base.is_dir():
        for folder in sorted(local_base.iterdir()):
            path = _local_file(cdir, folder.name) if folder.is_dir() else None
            if path is None or folder.name in reg:
                continue
            rows.append({"name": folder.name, "version": None, "file": path.name, "urls": [],
                         "sha256": read_memo_raw(path), "size": path.stat().st_size,
                         "classes": [], "training_data": None, "licence": None,
                         "description": "installed by hand", "bundled": False,
                         "installed": "cache", "path": str(path), "default": False,
                         "local": True})
    return rows

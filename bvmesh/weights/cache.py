"""Where weights files live on disk, and hashing them once per change rather than once per run.

Layout of the cache folder (`cache_dir()`):

    <cache>/<file>                     registered models, by their registry file name
    <cache>/<file>.sha256.json         hash memo of that file (see `file_sha256`)
    <cache>/local/<NAME>/<file>        files added by `bvmesh weights install FILE --name NAME`
    <cache>/url/<key>/<file>           files fetched from a URL given directly (`--weights URL`)
    <cache>/.locks/<file>.lock         inter-process locks; empty, left in place on purpose

Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import WeightsError

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "BVMESH_CACHE_DIR"
ENV_OFFLINE = "BVMESH_OFFLINE"
MEMO_SUFFIX = ".sha256.json"
PARTIAL_SUFFIX = ".partial"
_CHUNK = 1 << 20  # 1 MiB reads: large enough to hash at disk speed, small enough for progress

#: Hashes computed in this process, keyed by (path, size, mtime_ns, inode): a cohort run that
#: resolves the same file for every case hashes it once even where no memo can be written.
_PROCESS_MEMO: dict[tuple, str] = {}


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The weights cache folder: `override`, else $BVMESH_CACHE_DIR, else the user cache.

    The default is `platformdirs.user_cache_path("bvmesh") / "weights"`
    (~/.cache/bvmesh/weights on Linux). The folder is not created here.
    """
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs  # only when needed: a few ms we need not pay with an override

    return platformdirs.user_cache_path("bvmesh") / "weights"


def is_offline(flag: bool | None = None) -> bool:
    """`flag` if given, else whether $BVMESH_OFFLINE is set to a true value (1/true/yes/on)."""
    if flag is not None:
        return flag
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def memo_path(path: Path) -> Path:
    """The JSON sidecar remembering `path`'s hash: `<path>.sha256.json`."""
    return path.with_name(path.name + MEMO_SUFFIX)


def _stat_key(st: os.stat_result) -> dict:
    # Any rewrite of the file changes at least one of these; an in-place bit flip on disk does
    # not, which is what `bvmesh weights verify` (a full rehash) is for.
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def read_memo(path: Path) -> str | None:
    """The remembered SHA-256 of `path` if its memo matches the file's current stat, else None."""
    try:
        st = path.stat()
        memo = json.loads(memo_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(memo, dict) or {k: memo.get(k) for k in ("size", "mtime_ns", "inode")} \
            != _stat_key(st):
        return None
    digest = memo.get("sha256")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def write_memo(path: Path, digest: str) -> None:
    """Remember `digest` for `path` as it is now. Best effort: a read-only cache just rehashes."""
    try:
        record = {**_stat_key(path.stat()), "sha256": digest}
        target = memo_path(path)
        tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    except OSError as exc:
        log.debug("cannot write hash memo for %s: %s", path, exc)


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """SHA-256 (hex) of the whole file, read in 1 MiB chunks. `on_bytes(n)` reports progress."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights file ({exc.strerror or exc})") from exc
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, *, memo: bool = True, force: bool = False) -> str:
    """SHA-256 of `path`, hashing only when the file changed since it was last hashed.

    With `memo=True` the digest is remembered in `<path>.sha256.json` together with the file's
    (size, mtime_ns, inode); the next call with an unchanged stat returns it without reading
    the file. `force=True` rehashes regardless (and refreshes the memo). Use `memo=False` for
    files outside the cache (the package folder, a user's own path) so nothing is written there.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights file ({exc.strerror or exc})") from exc
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns, st.st_ino)
    if not force:
        digest = _PROCESS_MEMO.get(key) or (read_memo(path) if memo else None)
        if digest is not None:
            _PROCESS_MEMO[key] = digest
            return digest
    digest = hash_file(path)
    _PROCESS_MEMO[key] = digest
    if memo:
        write_memo(path, digest)
    return digest


def read_memo_raw(path: Path) -> str | None:
    """The digest recorded in `path`'s memo whatever the file's stat now (for `verify`)."""
    try:
        memo = json.loads(memo_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    digest = memo.get("sha256") if isinstance(memo, dict) else None
    return digest if isinstance(digest, str) and len(digest) == 64 else None


@contextlib.contextmanager
def file_lock(target: Path, *, timeout: float = 3600.0, poll: float = 0.1) -> Iterator[None]:
    """Hold an inter-process lock for writing `target` (a file in a cache folder).

    The lock is `<folder>/.locks/<name>.lock`, locked with `fcntl.flock` (POSIX; released by
    the kernel if the holder dies, so no stale locks) or `msvcrt.locking` (Windows). The lock
    file stays in place: deleting it would let a waiter lock an unlinked inode while a newcomer
    locks a fresh file. `timeout` (seconds) bounds the wait for another process's download.
    """
    lock_dir = target.parent / ".locks"
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{target.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise WeightsError(f"{target.parent}: cannot create a lock file in the weights cache "
                           f"({exc.strerror or exc}); make the folder writable or choose another "
                           "with --cache-dir / BVMESH_CACHE_DIR") from exc
    try:
        _acquire(fd, target, timeout, poll)
        try:
            yield
        finally:
            _release(fd)
    finally:
        os.close(fd)


def _acquire(fd: int, target: Path, timeout: float, poll: float) -> None:
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            _try_lock(fd)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            # Windows reports a held lock as EACCES or EDEADLK rather than BlockingIOError.
            if exc.errno not in (errno.EACCES, errno.EDEADLK):
                raise WeightsError(f"{target}: cannot lock ({exc.strerror or exc})") from exc
        if not waited:
            log.info("waiting for another process writing %s", target)
            waited = True
        if time.monotonic() >= deadline:
            raise WeightsError(f"{target}: another process has held its lock for {timeout:.0f} s; "
                               "if none is running, report this as a bug")
        time.sleep(poll)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _release(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _release(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

"""Streaming download of a weights file: locked, hashed while streaming, renamed into place.

Only the standard library's urllib is used: it follows redirects (GitHub release assets do)
and honours the usual proxy variables (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) by itself. This
module is imported only when something has to be fetched, so `bvmesh weights list` never pays
for urllib, http.client and ssl.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .. import __version__
from ..errors import WeightsError
from .cache import PARTIAL_SUFFIX, file_lock, file_sha256, write_memo

log = logging.getLogger(__name__)

ENV_TIMEOUT = "BVMESH_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 20
_FIX = ("download it on a machine with network (`bvmesh weights download NAME`), or fetch the "
        "file by hand, check it with `sha256sum`, and add it with `bvmesh weights install FILE`")


def default_timeout() -> float:
    """Socket timeout in seconds: $BVMESH_DOWNLOAD_TIMEOUT, else 60."""
    env = os.environ.get(ENV_TIMEOUT)
    if env:
        try:
            value = float(env)
        except ValueError:
            raise WeightsError(f"{ENV_TIMEOUT}={env!r}: not a number of seconds") from None
        if value <= 0:
            raise WeightsError(f"{ENV_TIMEOUT}={env!r}: must be a positive number of seconds")
        return value
    return DEFAULT_TIMEOUT


def download(urls: str | Sequence[str], dst: str | os.PathLike, *, sha256: str | None = None,
             size: int | None = None, timeout: float | None = None, progress: bool = False,
             force: bool = False) -> str:
    """Fetch the first URL of `urls` that works into `dst`, and return the file's SHA-256.

    The bytes stream into `<dst>.<random>.partial` beside `dst` while being hashed; the file is
    renamed onto `dst` (atomic `os.replace`) only when the byte count matches Content-Length
    and `size`, and the digest matches `sha256`. Every failure removes the partial file.

    Concurrent callers (threads or processes, e.g. a cluster cohort sharing one cache) are
    serialised by a lock file; a caller that waited finds the finished file, verifies it and
    returns without downloading again. With `force=True` an existing good file is fetched anew.

    Args:
        urls: one URL or mirrors tried in order (http, https or file).
        dst: final path; its folder is created.
        sha256: expected lower-case hex digest; None accepts any content (and returns its hash).
        size: expected size in bytes, or None.
        timeout: seconds per connect/read before giving up; default `default_timeout()`.
        progress: draw a rich progress bar on stderr.
        force: download even if `dst` already holds a file with the right hash.

    Raises:
        WeightsError: naming the URL(s), `dst`, and what to do; no partial file is left.
    """
    dst = Path(dst)
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise WeightsError(f"{dst.name}: no download URL is known; {_FIX}")
    timeout = default_timeout() if timeout is None else timeout
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{dst.parent}: cannot create the weights cache folder "
                           f"({exc.strerror or exc}); choose a writable one with --cache-dir or "
                           "BVMESH_CACHE_DIR") from exc

    with file_lock(dst):
        # Whoever held the lock before us may have just finished the same download.
        if not force and dst.is_file():
            digest = file_sha256(dst)
            if sha256 is None or digest == sha256:
                log.info("%s already present", dst)
                return digest
            log.warning("%s has SHA-256 %s, expected %s: downloading it again", dst, digest, sha256)
        # We hold the lock, so any partial file of ours is a leftover of a killed process.
        for stale in dst.parent.glob(f"{dst.name}.*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(OSError):
                stale.unlink()

        errors: list[str] = []
        for url in url_list:
            try:
                return _fetch(url, dst, sha256=sha256, size=size, timeout=timeout,
                              progress=progress)
            except WeightsError as exc:
                # info, not warning: the caller gets every mirror's failure in the exception.
                log.info("%s", exc)
                errors.append(str(exc))
    if len(errors) == 1:
        raise WeightsError(errors[0])
    raise WeightsError(f"{dst.name}: every mirror failed:\n  " + "\n  ".join(errors))


def _fetch(url: str, dst: Path, *, sha256: str | None, size: int | None, timeout: float,
           progress: bool) -> str:
    tmp = dst.with_name(f"{dst.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
    where = f"{url} -> {dst}"
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"bvmesh/{__version__}"})
        log.info("downloading %s", where)
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "xb") as f:
            announced = _content_length(response)
            if size is not None and announced is not None and announced != size:
                raise WeightsError(f"{url}: server announces {announced} bytes but {dst.name} has "
                                   f"{size} bytes; the URL serves another file; {_FIX}")
            h = hashlib.sha256()
            received = 0
            with _progress_bar(progress, dst.name, announced or size) as advance:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        # http.client returns b"" rather than raising when the peer closes early.
        if announced is not None and received != announced:
            raise WeightsError(f"{url}: transfer cut short after {received} of {announced} bytes "
                               f"(nothing was saved); try again, or {_FIX}")
        if size is not None and received != size:
            raise WeightsError(f"{url}: received {received} bytes, expected {size} for "
                               f"{dst.name} (nothing was saved); try again, or {_FIX}")
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256:
            raise WeightsError(
                f"{url}: downloaded file for {dst} has SHA-256 {digest}, expected {sha256}; it "
                "was discarded. The server (or a proxy) delivered other or damaged bytes: try "
                f"again later, or {_FIX}")
        os.replace(tmp, dst)
        write_memo(dst, digest)
        log.info("saved %s (%d bytes, sha256 %s)", dst, received, digest)
        return digest
    except urllib.error.HTTPError as exc:
        raise WeightsError(f"{url}: HTTP {exc.code} {exc.reason} while downloading {dst.name}; "
                           f"check the URL or try later, or {_FIX}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _timeout_error(url, dst, timeout) from None
        raise WeightsError(f"{url}: cannot reach it ({reason}) to download {dst.name}; check the "
                           "network, and HTTPS_PROXY/HTTP_PROXY if you are behind a proxy, or "
                           f"{_FIX}") from None
    except TimeoutError:
        raise _timeout_error(url, dst, timeout) from None
    except (http.client.HTTPException, ConnectionError) as exc:
        raise WeightsError(f"{url}: connection broke while downloading {dst.name} "
                           f"({type(exc).__name__}: {exc}); try again, or {_FIX}") from None
    except ValueError as exc:  # urllib's answer to a malformed URL
        raise WeightsError(f"{url}: not a usable URL ({exc})") from None
    except OSError as exc:
        raise WeightsError(f"{where}: download failed ({exc.strerror or exc}); check free space "
                           "and that the cache folder is writable") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _timeout_error(url: str, dst: Path, timeout: float) -> WeightsError:
    return WeightsError(f"{url}: no data for {timeout:g} s while downloading {dst.name}; the "
                        f"server or network stalled. Try again, raise the limit with "
                        f"BVMESH_DOWNLOAD_TIMEOUT=SECONDS, or {_FIX}")


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length") if response.headers else None
    try:
        n = int(value) if value is not None else None
    except ValueError:
        return None
    return n if n is not None and n >= 0 else None


@contextlib.contextmanager
def _progress_bar(show: bool, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield `advance(nbytes)`; draws a rich bar on stderr only when `show` (rich loaded lazily)."""
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)

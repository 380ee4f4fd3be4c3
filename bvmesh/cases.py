"""The cases of a cohort: what segments one input, running each case (in this process or
in worker processes) and what came of it.

A :class:`Segmenter` is plain data (options, weights, device), so a worker process can be
handed one and load its model once; :func:`run_cases` runs the cases one after another,
or over ``workers`` processes that share the machine's cores. Each case is written to its
folder by whoever segmented it; the caller gets one :class:`CaseOutcome` per case, in
input order. ``dask=ADDRESS`` sends the cases to a Dask cluster instead (dask.distributed,
extra ``bvmesh[dask]``): its workers must see the input and output paths (a shared file
system, as on any cluster) and load the model once each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .cine import CineResult
from .errors import BvmeshError, LabelMapInput
from .outputs import REPORT, MeshOptions, write_case, write_cine_case
from .pipeline import SegmentOptions

SUMMARY_FIELDS = ("case", "status", "qc", "qc_checks", "input", "base_slice", "base_runner_up",
                  "lv_pool_ml", "lv_myo_ml", "rv_pool_ml", "rv_myo_ml", "lv_mass_g", "ed_frame",
                  "es_frame", "lv_ef_pct", "rv_ef_pct", "mesh_passed", "seconds", "message")
VOLUME_FIELDS = ("lv_pool_ml", "lv_myo_ml", "rv_pool_ml", "rv_myo_ml", "lv_mass_g")


@dataclass(frozen=True)
class CaseOutcome:
    case: str
    input: str
    status: str  # ok | failed | skipped | mesh-failed
    message: str = ""
    report: dict | None = None
    seconds: float = 0.0

    @property
    def qc_failed(self) -> list[str]:
        return list((self.report or {}).get("qc", {}).get("failed", []))

    def row(self) -> dict:
        r = self.report or {}
        m = r.get("measurements", {})
        mesh = r.get("mesh", {}).get("quality", {})
        qc = r.get("qc", {})
        cine, function = r.get("cine", {}), r.get("function", {})
        return {"case": self.case, "status": self.status, "qc": qc.get("verdict", ""),
                "qc_checks": " ".join(qc.get("failed", []) + qc.get("warned", [])),
                "input": self.input, "base_slice": r.get("slices", {}).get("base_slice", ""),
                "base_runner_up": _runner_up(r.get("slices", {})),
                **{k: m.get(k, "") for k in VOLUME_FIELDS},
                "ed_frame": cine.get("ed", {}).get("frame", ""),
                "es_frame": cine.get("es", {}).get("frame", ""),
                **{k: function.get(k, "") for k in ("lv_ef_pct", "rv_ef_pct")},
                "mesh_passed": mesh.get("passed", ""), "seconds": round(self.seconds, 2),
                "message": self.message}


def _runner_up(slices: dict) -> int | str:
    """The detected base's runner-up ('' when the base was given or had no rival)."""
    runner = slices.get("base_detection", {}).get("runner_up")
    return "" if runner is None else runner


#: A cohort this large or larger runs over worker processes by default: each costs a few
#: seconds to start (torch, the model), which fewer cases do not win back.
AUTO_WORKERS_MIN_CASES = 8
#: Memory one worker may take (a cold case peaks at about 0.5 GB, benchmarks/README.md;
#: a cine or a large volume takes more).
WORKER_MB = 1500


def auto_workers(n_cases: int) -> int:
    """Processes for ``n_cases`` by default: one per core for a cohort of at least
    :data:`AUTO_WORKERS_MIN_CASES` (as memory allows, :data:`WORKER_MB` each), else one.
    Cases spend much of their time on one core (remeshing, the quality gate, the PNGs):
    on 2 cores two workers take 4.9 s a case against 7.4 s for one process."""
    if n_cases < AUTO_WORKERS_MIN_CASES:
        return 1
    try:
        memory_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):  # not a POSIX system: cores decide
        memory_mb = float("inf")
    return max(1, min(os.cpu_count() or 1, n_cases, int(memory_mb // WORKER_MB)))


#: Models loaded in this process, by (weights, file time, device, cache_dir, offline): a
#: worker loads its model for the first case and keeps it for the rest.
_MODELS: dict[tuple, object] = {}


@dataclass(frozen=True)
class Segmenter:
    """Segments one input: a volume, or every frame of a cine when it has several.

    ``options`` for every case (the base comes per case); ``cine``: the keywords of
    :func:`bvmesh.cine.segment_cine` (ed, es, height_cm, weight_kg, temporal).
    """

    options: SegmentOptions = SegmentOptions()
    weights: str | None = None
    device: str = "auto"
    cache_dir: str | None = None
    offline: bool | None = None
    frame: int | None = None
    cine: dict = field(default_factory=dict)

    def model(self):
        """The model, loaded once per process (a bad weights file raises here)."""
        from .pipeline import load_weights

        # A file rewritten in place (a retrained run) is a different model.
        stamp = os.stat(self.weights).st_mtime_ns if self.weights and os.path.isfile(self.weights) \
            else None
        key = (self.weights, stamp, self.device, self.cache_dir, self.offline)
        if key not in _MODELS:
            _MODELS[key] = load_weights(self.weights, self.device, cache_dir=self.cache_dir,
                                        offline=self.offline)[0]
        return _MODELS[key]

    def __call__(self, path: str | os.PathLike, base_slice: int | None = None):
        from . import io
        from .cine import segment_cine
        from .pipeline import segment

        image = io.read(path, frame=self.frame)  # a Cine when the input has several frames
        if isinstance(image, io.Cine):
            return segment_cine(image, self.options, model=self.model(), base_slice=base_slice,
                                **self.cine)
        return segment(image, self.options, model=self.model(), base_slice=base_slice)


@dataclass(frozen=True)
class _Job:
    """One case to segment: everything a worker process needs."""

    path: Path
    case: str
    out: Path
    base: int | None
    alone: bool
    probabilities: bool
    mesh: MeshOptions | None


def run_cases(paths: list[Path], names: list[str], out: Path, segment_one: Callable[..., object],
              outcomes: list[CaseOutcome], *, base_slices: dict[str, int] | None,
              base_slice: int | None, skip_existing: bool, probabilities: bool,
              mesh: MeshOptions | None, on_case: Callable[[CaseOutcome], None] | None,
              alone: bool, workers: int = 1, dask: str | None = None) -> None:
    """Run every case, appending to ``outcomes`` as cases finish, then put them in input
    order. ``workers`` > 1 or ``dask`` (a scheduler address, or its scheduler file) need a
    :class:`Segmenter`: it is what is sent to the processes."""
    jobs, order = [], {name: i for i, name in enumerate(names)}
    if dask:  # another machine resolves relative paths against its own directory
        paths, out = [p.absolute() for p in paths], out.absolute()

    def finished(outcome: CaseOutcome) -> None:
        outcomes.append(outcome)
        if on_case:
            on_case(outcome)

    for path, case in zip(paths, names):
        base = (base_slices or {}).get(case, base_slice)
        done = read_report(out / case) if skip_existing and (out / case / REPORT).is_file() else None
        # A corrected base (--base-slices) re-runs a finished case; otherwise it is kept,
        # its report still in the summary.
        if done is not None and base in (None, done.get("slices", {}).get("base_slice")):
            finished(CaseOutcome(case, str(path), "skipped", "output exists (--skip-existing)", done))
        else:
            jobs.append(_Job(path, case, out, base, alone, probabilities, mesh))
    if dask and jobs:
        _on_dask(jobs, _segmenter(segment_one), dask, finished)
    elif workers > 1 and len(jobs) > 1:
        _in_workers(jobs, _segmenter(segment_one), workers, finished)
    else:
        for job in jobs:
            finished(one_case(job, segment_one))
    outcomes.sort(key=lambda o: order[o.case])


def _in_workers(jobs: list[_Job], segmenter: Segmenter, workers: int,
                finished: Callable[[CaseOutcome], None]) -> None:
    """The jobs over ``workers`` processes, each with its share of the cores."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked copy of a process that has started torch's thread pool
    # can deadlock.
    pool = ProcessPoolExecutor(min(workers, len(jobs)), multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads,))
    futures = {pool.submit(one_case, job, segmenter): job for job in jobs}
    try:
        for future in as_completed(futures):
            job = futures[future]
            try:
                finished(future.result())
            except BrokenProcessPool:
                finished(CaseOutcome(job.case, str(job.path), "failed",
                                     "its worker process died (out of memory?); run it again "
                                     "with --skip-existing"))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _segmenter(segment_one: Callable[..., object]) -> Segmenter:
    if not isinstance(segment_one, Segmenter):
        raise TypeError("cases run in other processes need a bvmesh.cases.Segmenter to send them")
    return segment_one


def _on_dask(jobs: list[_Job], segmenter: Segmenter, address: str,
             finished: Callable[[CaseOutcome], None]) -> None:
    """The jobs as tasks on a Dask cluster; a task that fails (its worker died, a bug) is a
    failed case, the others go on."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise BvmeshError("sending cases to a Dask cluster needs dask.distributed: "
                          "pip install 'bvmesh[dask]'") from None
    where = {"scheduler_file": address} if os.path.isfile(address) else {"address": address}
    try:
        client = Client(**where, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise BvmeshError(f"{address}: no Dask scheduler answers there ({exc}); start one "
                          "(dask scheduler) or give its tcp://HOST:PORT") from None
    # Paths the workers resolve against their own directories: made absolute here.
    local = {k: str(Path(v).absolute()) for k, v in (("weights", segmenter.weights),
                                                        ("cache_dir", segmenter.cache_dir))
             if v is not None and (k == "cache_dir" or os.path.isfile(v))}
    segmenter = dataclasses.replace(segmenter, **local)
    futures: dict = {}
    try:
        # pure=False: two cases with equal inputs are still two tasks.
        futures = {client.submit(_dask_case, job, segmenter, pure=False,
                                 key=f"bvmesh-{job.case}-{os.getpid()}-{i}"): job
                   for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            job = futures[future]
            try:
                finished(future.result())
            except Exception as exc:  # noqa: BLE001 - a lost task is one failed row
                finished(CaseOutcome(job.case, str(job.path), "failed",
                                     f"its Dask task failed ({type(exc).__name__}: {exc}); run "
                                     "it again with --skip-existing"))
    finally:
        client.cancel(list(futures))  # an interrupted run leaves no task behind
        client.close()


def _dask_case(job: _Job, segmenter: Segmenter) -> CaseOutcome:
    """One case on a Dask worker: its cores shared by the worker's threads (set once)."""
    import torch
    from distributed import get_worker

    share = max(1, (os.cpu_count() or 1) // max(1, get_worker().state.nthreads))
    if torch.get_num_threads() != share:
        torch.set_num_threads(share)
    return one_case(job, segmenter)


def one_case(job: _Job, segment_one: Callable[..., object]) -> CaseOutcome:
    """Segment and write one case; a bad input is a failed (or skipped) outcome, not raised."""
    t0 = time.perf_counter()
    case, path = job.case, str(job.path)
    try:
        result = segment_one(job.path, base_slice=job.base)
        if isinstance(result, CineResult):
            write_cine_case(result, job.out, case, mesh=job.mesh)
        else:
            write_case(result, job.out, case, probabilities=job.probabilities, mesh=job.mesh)
    except LabelMapInput as exc:  # in a cohort, a label map beside its image is no failure
        return CaseOutcome(case, path, "failed" if job.alone else "skipped", str(exc), None,
                           time.perf_counter() - t0)
    except BvmeshError as exc:
        return CaseOutcome(case, path, "failed", str(exc), None, time.perf_counter() - t0)
    report = read_report(job.out / case)
    passed = report.get("mesh", {}).get("quality", {}).get("passed", True)
    return CaseOutcome(case, path, "ok" if passed else "mesh-failed",
                       "" if passed else "mesh failed the quality gate (see report)",
                       report, time.perf_counter() - t0)


def read_report(folder: Path) -> dict:
    return json.loads((folder / REPORT).read_text(encoding="utf-8"))

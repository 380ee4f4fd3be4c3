"""Many cases in one call: input discovery, per-case base slices, shards, one model load
per process, a failed case reported and the run going on, and a summary (rows +
summary.csv). Running the cases themselves (here or in worker processes): bvmesh.cases.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import io
from .cases import SUMMARY_FIELDS, CaseOutcome, Segmenter, run_cases
from .errors import InputError, Interrupted
from .outputs import MeshOptions, prepare_dir

log = logging.getLogger(__name__)

# CaseOutcome and Segmenter live in bvmesh.cases; a cohort's users find them here too.
__all__ = ["CaseOutcome", "Segmenter", "Plan", "plan", "discover", "case_names", "read_base_slices",
           "check_base_slices", "Shard", "merge_summaries", "run", "write_summary", "exit_code",
           "remove_stale_partials"]

#: A hidden partial case folder older than this (s) is a killed run's leftover.
STALE_PARTIAL_S = 600.0

def discover(inputs: Iterable[str]) -> list[Path]:
    """Files, folders of images, DICOM series folders and glob patterns -> image paths.

    A folder that holds NIfTI/MHA/NRRD files is a cohort (label files ending in ``_gt``
    are skipped); any other folder is read as one DICOM series.
    """
    found: list[Path] = []
    for item in inputs:
        # An existing path is taken literally: "scans[2019]/a.nii.gz" is a file, not a pattern.
        literal = Path(item).exists() or not glob.has_magic(item)
        matches = [item] if literal else sorted(glob.glob(item))
        if not matches:
            raise InputError(f"{item}: the pattern matches no file")
        for m in map(Path, matches):
            if m.is_dir():
                images = sorted(p for p in m.iterdir() if p.is_file() and io.is_image_path(p)
                                and not p.name.lower().endswith(".dcm")
                                and not io.case_name(p).endswith("_gt"))
                found.extend(images if images else [m])
            else:
                found.append(m)
    unique = list(dict.fromkeys(found))
    case_names(unique)  # refuse names that would collide before any work is done
    return unique


def case_names(paths: list[Path]) -> list[str]:
    """The case name of each input: its file name without the extension; where several
    inputs share that (``case1/image.nii.gz``, ``case2/image.nii.gz``: the commonest cohort
    layout), the name of the folder it is in."""
    stems = [io.case_name(p) for p in paths]
    shared = Counter(stems)  # counted once: a cohort can hold tens of thousands of inputs
    names = [stem if shared[stem] == 1 else (Path(p).resolve().parent.name or stem)
             for p, stem in zip(paths, stems)]
    dupes = sorted(n for n, k in Counter(names).items() if k > 1)
    if dupes:
        raise InputError(f"several inputs share the case name(s) {dupes}, also by their folders; "
                         "their outputs would collide in one folder: run them into separate -o "
                         "folders")
    return names


def check_base_slices(base_slices: dict[str, int], names: list[str], source: str) -> None:
    """Refuse a base-slice table that names cases this run does not have (a typo would
    silently fall back to the detected base)."""
    unknown = sorted(set(base_slices) - set(names))
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise InputError(f"{source}: {len(unknown)} case name(s) match no input: {shown}; "
                         f"the cases of this run are named like {names[0]!r}")


def read_base_slices(path: str | os.PathLike) -> dict[str, int]:
    """A CSV of ``case,base_slice`` rows; or any CSV whose header names a ``case`` and a
    ``base_slice`` column, such as a run's summary.csv with a few bases corrected."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such base-slice CSV")
    out: dict[str, int] = {}
    columns = (0, 1)
    with path.open(newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            cells = [c.strip() for c in row]
            if not cells or cells[0].startswith("#"):
                continue
            if i == 0 and "case" in cells:
                if "base_slice" in cells:
                    columns = (cells.index("case"), cells.index("base_slice"))
                continue
            if len(cells) > max(columns) and not cells[columns[1]]:
                continue  # no base for this case (a failed case in a summary): detect it
            try:
                out[cells[columns[0]]] = int(cells[columns[1]])
            except (IndexError, ValueError):
                raise InputError(f"{path}:{i + 1}: expected 'case,base_slice', got {row}") from None
    return out


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (0-based) of ``count`` of a cohort: a SLURM array's task."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"``, 0 <= I < N (SLURM: ``--array=0-<N-1>``)."""
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise InputError(f"--shard {text!r}: give I/N, e.g. 0/10") from None
        if n < 1 or not 0 <= i < n:
            raise InputError(f"--shard {text}: I must be in 0..N-1 (SLURM: --array=0-{max(n, 1) - 1})")
        return cls(i, n)

    @property
    def summary_name(self) -> str:
        return f"summary.shard-{self.index}-of-{self.count}.csv"

    def select(self, paths: list[Path]) -> list[Path]:
        """This shard's inputs: every count-th case in the order of their names, so the split
        is the same whatever the order of the arguments and every case is in one shard."""
        names = case_names(paths)
        order = sorted(range(len(paths)), key=lambda i: names[i])
        mine = set(order[self.index::self.count])
        return [p for i, p in enumerate(paths) if i in mine]


@dataclass(frozen=True)
class Plan:
    """What a run will segment: its inputs, their bases, where its summary goes."""

    paths: list[Path]
    base_slices: dict[str, int] | None = None
    alone: bool = False  # one input, no shard: its failure is the run's error
    summary_name: str = "summary.csv"


def plan(inputs: Iterable[str], *, base_slices: str | os.PathLike | None = None,
         shard: Shard | None = None) -> Plan:
    """Discover the inputs, read and check the per-case base slices (a CSV), take the
    shard's share; raises before any case is segmented."""
    paths = discover(inputs)
    per_case = read_base_slices(base_slices) if base_slices else None
    if per_case:
        check_base_slices(per_case, case_names(paths), str(base_slices))
    if shard is None:
        return Plan(paths, per_case, len(paths) == 1)
    return Plan(shard.select(paths), per_case, False, shard.summary_name)


SHARD_SUMMARY = re.compile(r"summary\.shard-(\d+)-of-(\d+)\.csv$")


def merge_summaries(out_dir: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """One summary of a cohort run in shards: every shard's rows (a case run again in a
    later shard file replaces its earlier row), written to ``out_dir/summary.csv``.
    Returns (rows, missing shards as "I/N")."""
    out = Path(out_dir)
    files = sorted(out.glob("summary.shard-*-of-*.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise InputError(f"{out}: holds no summary.shard-I-of-N.csv; run bvmesh segment "
                         "with --shard I/N into it first")
    rows: dict[str, dict] = {}
    seen: dict[int, set[int]] = {}
    for f in files:
        i, n = (int(v) for v in SHARD_SUMMARY.search(f.name).groups())
        seen.setdefault(n, set()).add(i)
        with f.open(newline="", encoding="utf-8") as fh:
            rows.update({r["case"]: r for r in csv.DictReader(fh)})
    missing = [f"{i}/{n}" for n, got in seen.items() for i in range(n) if i not in got]
    merged = [rows[k] for k in sorted(rows)]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(merged)

    io.atomic_write(out / "summary.csv", write)
    return merged, missing


def run(paths: list[Path], out_dir: str | os.PathLike, segment_one: Callable[..., object], *,
        base_slices: dict[str, int] | None = None, base_slice: int | None = None,
        skip_existing: bool = False, probabilities: bool = False,
        mesh: MeshOptions | None = MeshOptions(),
        on_case: Callable[[CaseOutcome], None] | None = None,
        summary_name: str = "summary.csv", alone: bool | None = None,
        workers: int = 1, dask: str | None = None) -> list[CaseOutcome]:
    """Segment every path; ``segment_one(path, base_slice=...)`` returns a SegmentResult
    (or a CineResult, written as a cine's folder). ``workers`` > 1: that many processes;
    ``dask``: the cases as tasks on the Dask cluster whose scheduler is at that address (or
    described by that scheduler file). Both need ``segment_one`` to be a
    :class:`bvmesh.cases.Segmenter`.

    summary.csv (``summary_name``) lists every case, except for a run of one input that
    failed: that is bad input, reported by the caller, and leaves nothing behind (not even
    the output folder, when this run created it). ``alone=False``: a run of one input is
    still a cohort (a shard of one case).
    """
    alone = len(paths) == 1 if alone is None else alone
    created = not Path(out_dir).exists()
    out = prepare_dir(out_dir)
    remove_stale_partials(out)
    outcomes: list[CaseOutcome] = []
    try:
        run_cases(paths, case_names(paths), out, segment_one, outcomes, base_slices=base_slices,
                  base_slice=base_slice, skip_existing=skip_existing, probabilities=probabilities,
                  mesh=mesh, on_case=on_case, alone=alone, workers=workers,
                  dask=dask)
    except KeyboardInterrupt:
        # write_case's own clean-up has removed the case in progress; keep what is finished.
        if outcomes:
            write_summary(outcomes, out / summary_name)
        raise Interrupted(f"interrupted after {len(outcomes)} of {len(paths)} case(s); "
                          f"{out / summary_name} lists the finished ones; run again with "
                          "--skip-existing to go on") from None
    if alone and outcomes[0].status == "failed":
        if created:
            with contextlib.suppress(OSError):  # only if still empty
                out.rmdir()
        return outcomes
    write_summary(outcomes, out / summary_name)
    return outcomes


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the hidden half-written case folders a killed run left (older than
    ``STALE_PARTIAL_S``: a younger one may belong to a run writing here right now)."""
    now, removed = time.time(), []
    for p in out.glob(".*.partial-*"):
        with contextlib.suppress(OSError):
            if p.is_dir() and now - p.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(p)
                removed.append(p)
    if removed:
        log.warning("removed %d half-written case folder(s) left by an interrupted run", len(removed))
    return removed


def write_summary(outcomes: list[CaseOutcome], path: Path) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
            writer.writeheader()
            for o in outcomes:
                writer.writerow(o.row())

    return io.atomic_write(path, write)


def exit_code(outcomes: list[CaseOutcome]) -> int:
    """0: every case fine; 1: a case failed; 4: a case failed quality control on more than
    its mesh; 3: all segmented but a mesh failed its gate."""
    if any(o.status == "failed" for o in outcomes):
        return 1
    if any(set(o.qc_failed) - {"mesh_gate"} for o in outcomes):
        return 4
    if any(o.status == "mesh-failed" for o in outcomes):
        return 3
    return 0

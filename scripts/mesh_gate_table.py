"""Tally the mesh quality gate over a run: how many meshes passed, what failed, how much
the repairs added.

    python scripts/mesh_gate_table.py out/            # a `bvmesh segment` output folder
    python scripts/mesh_gate_table.py meshes/*.json   # `bvmesh mesh ... --json` outputs
    python scripts/mesh_gate_table.py gt.jsonl        # scripts/mesh_acdc_check.py

Reads each case's report.json (segment) or the JSON `bvmesh mesh --json` printed, and
prints a markdown summary: gate passes, failed checks, handles closed and the plug,
repair and apex-cap volumes (median and maximum), for docs/meshes.md.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

NOTE_VOLUMES = {
    "handle plugs": re.compile(r"closed (\d+) handle\(s\).*? of the myocardium with ([\d.]+) ml"),
    "ambiguous corners filled": re.compile(r"filled \d+ voxel\(s\) where .*?\(([\d.]+) ml\)"),
    "pool extended to the base": re.compile(r"blood pool ended .*? extended to it \(([\d.]+) ml"),
    "geometric RV wall": re.compile(r"geometric RV free wall, .*?\(([\d.]+) ml\)"),
    "topology repair": re.compile(r"topology repair: added ([\d.]+) ml"),
    "apex cap": re.compile(r"last 2 isotropic slices were closed as myocardium for the mesh \(([\d.]+) ml"),
}


def reports(paths: list[str]) -> list[tuple[str, dict]]:
    """(case name, {"quality": ..., "notes": [...]}) for every report found."""
    out = []
    for arg in map(Path, paths):
        if arg.suffix == ".jsonl":  # scripts/mesh_acdc_check.py: one case per line
            for line in arg.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                out.append((record["case"], record))
            continue
        files = sorted(arg.glob("*/report.json")) if arg.is_dir() else [arg]
        for f in files:
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                print(f"skipped {f}: {err}", file=sys.stderr)
                continue
            mesh = data.get("mesh", data)
            if "quality" in mesh:
                name = f.parent.name if f.name == "report.json" else f.stem
                out.append((name, mesh))
    return out


def summarise(rows: list[tuple[str, dict]]) -> str:
    passed = [name for name, m in rows if m["quality"]["passed"]]
    failed = Counter(c for _, m in rows for c in m["quality"].get("failed", []))
    lines = [f"| meshes | {len(rows)} |", "|---|---|",
             f"| gate passed | {len(passed)} |"]
    lines += [f"| failed on {check} | {n} |" for check, n in failed.most_common()]
    handles, volumes = [], {key: [] for key in NOTE_VOLUMES}
    for _, m in rows:
        for note in m.get("notes", []):
            for key, pattern in NOTE_VOLUMES.items():
                hit = pattern.search(note)
                if hit:
                    volumes[key].append(float(hit.groups()[-1]))
                    if key == "handle plugs":
                        handles.append(int(hit.group(1)))
    lines.append(f"| meshes with handles closed | {len(handles)} "
                 f"(handles per mesh: median {statistics.median(handles) if handles else 0:g}, "
                 f"max {max(handles, default=0)}) |")
    for key, vals in volumes.items():
        if vals:
            lines.append(f"| {key}, ml (median / max over {len(vals)} meshes) | "
                         f"{statistics.median(vals):.2f} / {max(vals):.2f} |")
    gaps = [(hit.group(1), float(hit.group(2))) for _, m in rows for n in m.get("notes", [])
            for hit in [re.search(r"the (LV|RV) blood pool ended ([\d.]+) mm below", n)] if hit]
    if gaps:
        lines.append(f"| pools extended to the base | LV {sum(g[0] == 'LV' for g in gaps)}, RV "
                     f"{sum(g[0] == 'RV' for g in gaps)}; gap median "
                     f"{statistics.median(g[1] for g in gaps):.1f} mm |")
    warned = [name for name, m in rows if any(n.startswith("WARNING") for n in m.get("notes", []))]
    if warned:
        lines.append(f"| WARNING notes (a ventricle sealed below the base) | {len(warned)}: "
                     f"{', '.join(warned)} |")
    bad = [name for name, m in rows if not m["quality"]["passed"]]
    if bad:
        lines.append(f"| failing cases | {', '.join(bad)} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows = reports(sys.argv[1:])
    if not rows:
        sys.exit("no mesh reports found in " + " ".join(sys.argv[1:]))
    print(summarise(rows))


if __name__ == "__main__":
    main()

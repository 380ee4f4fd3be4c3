"""Costs of the weights layer: `bvmesh weights list` start-up, and hashing vs the hash memo.

    PYTHONPATH=. python benchmarks/bench_weights.py [--mb 100] [--repeats 5]

Prints medians over repeats. Everything runs locally (a temporary cache, no network).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_time  # noqa: E402

from bvmesh.weights import cache as wcache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="size of the test file in MB")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BVMESH_CACHE_DIR": tmp}
        cmd = [sys.executable, "-c", "from bvmesh.cli.main import main; main()", "weights",
               "list"]
        t = median_time(lambda: subprocess.run(cmd, env=env, check=True, capture_output=True),
                        args.repeats)
        print(f"bvmesh weights list (new process, whole CLI): {t * 1000:.0f} ms")

        f = Path(tmp) / "model.pt"
        f.write_bytes(os.urandom(args.mb * 1_000_000))

        def cold() -> None:
            wcache._PROCESS_MEMO.clear()
            wcache.file_sha256(f, force=True)

        def memo_hit() -> None:
            wcache._PROCESS_MEMO.clear()  # as in a new process: only the sidecar helps
            wcache.file_sha256(f)

        t_cold = median_time(cold, args.repeats)
        t_memo = median_time(memo_hit, args.repeats)
        print(f"SHA-256 of a {args.mb} MB file (page cache warm): {t_cold * 1000:.0f} ms "
              f"({args.mb / t_cold:.0f} MB/s)")
        print(f"same file, unchanged, through the .sha256.json memo: {t_memo * 1000:.2f} ms")


if __name__ == "__main__":
    main()

"""Quickstart benchmark: wall time and peak memory of ``python jobs/distill.py`` (Ray start-up included).

    python bench/quickstart.py [--runs 1] [--set KEY=VALUE ...]

Runs the quickstart in a fresh run directory as a child process and samples, every 0.25 s, the
proportional set size (PSS, so shared pages such as Ray's object store are not counted twice) of
that process and every process under it (Ray's GCS, raylet, workers and actors). As a baseline
measured in the same run it times a bare local ``ray.init(); ray.shutdown()``. The last line is
one JSON object with the figures and their ratios to the targets (5 minutes, 8 GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S, TARGET_GIB = 300.0, 8.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd: list[str], log_path: Path) -> tuple[float, int, int]:
    """(wall seconds, peak PSS bytes of the process tree, exit status)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        # A new session: Ray's daemons stay in this tree (they are children of the driver).
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, sum(_pss_bytes(p) for p in _tree(proc.pid)))
            time.sleep(0.25)
    return time.perf_counter() - start, peak, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    env_note = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        baseline_cmd = [sys.executable, "-c", "import ray; ray.init(address='local'); ray.shutdown()"]
        base_s, base_mem, rc = measure(baseline_cmd, Path(tmp) / "baseline.log")
        assert rc == 0, (Path(tmp) / "baseline.log").read_text()[-3000:]
        walls, peaks = [], []
        for i in range(args.runs):
            cmd = [sys.executable, "jobs/distill.py", "--output-dir", tmp, "--set", f"output.run_name=bench-{i}"]
            for o in args.overrides:
                cmd += ["--set", o]
            wall, peak, rc = measure(cmd, Path(tmp) / f"run-{i}.log")
            if rc != 0:
                sys.exit(f"quickstart failed (exit {rc}):\n" + (Path(tmp) / f"run-{i}.log").read_text()[-5000:])
            report = json.loads((Path(tmp) / f"bench-{i}" / "report.json").read_text())
            walls.append(wall)
            peaks.append(peak)
            print(f"run {i}: {wall:.1f} s, peak PSS {peak / 2**30:.2f} GiB, "
                  f"valid acc {report['student']['valid_accuracy']:.3f}, test acc {report['student']['test_accuracy']:.3f}")
    wall, peak = min(walls), max(peaks)
    result = {
        "bench": "quickstart",
        "wall_s": round(wall, 1),
        "peak_pss_gib": round(peak / 2**30, 2),
        "ray_init_baseline_s": round(base_s, 1),
        "ray_init_baseline_pss_gib": round(base_mem / 2**30, 2),
        "wall_vs_ray_init": round(wall / base_s, 2),
        "wall_vs_target_300s": round(wall / TARGET_S, 2),
        "mem_vs_target_8gib": round(peak / 2**30 / TARGET_GIB, 2),
        **env_note,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""``bench/gpu.py`` on the CPU (tiny shapes): the GPU check's code runs in the default tests so it does not rot,
and it runs without Ray, pyarrow or vLLM installed, as on a GPU machine with only torch and transformers."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

# Runs bench/gpu.py with Ray, pyarrow and vLLM made unimportable.
WITHOUT = """
import runpy, sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "pyarrow", "vllm"):
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Absent())
sys.argv = ["bench/gpu.py", "--device", "cpu", "--quick"]
runpy.run_path("bench/gpu.py", run_name="__main__")
"""


def test_the_gpu_check_runs_on_the_cpu_without_ray_or_pyarrow() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["checks"] == {"step_counts": True, "student_step[tiny-t5]": True, "compiled_student": True,
                                "fsdp": True,
                                "scoring": True, "resume": True, "hf_engine": True, "profile": True,
                                "mfu_sweep": True}
    # train.compile's path: batches of several plain shapes, one static graph then one shape-generic graph, the
    # same losses as the eager student (torch's eager backend here: capture and guards without codegen)
    compiled = result["compiled_student"]
    assert compiled["plain_shapes"] >= 3 and compiled["graphs"] == 2, compiled
    assert compiled["worst_relative_loss_gap"] <= 1e-4, compiled
    assert result["profile"]["aten_ops_per_step"] > 0
    # issue #37's CPU targets for the FLAN-T5-base step (one pass for all tasks, bf16 attention): before, 26,937
    # ops, 432 fp32 matrix products and three encoder calls
    counts = result["step_counts"]
    assert counts["shape"] == "flan-t5-base" and counts["aten_ops_per_step"] <= 9000, counts
    assert counts["fp32_matmuls_under_bf16"] == 0 and counts["encoder_calls_per_step"] == 1, counts
    assert counts["loss_gap"] <= 1e-3, counts
    sweep = result["mfu_sweep"]["rows"]
    assert list(sweep) == ["prefix b2", "one_encoder b2", "peer b2", "before b2"]
    assert all(r["ms_per_step"] > 0 and r["tflops_per_step"] > 0 for r in sweep.values()), sweep
    # the peer (a plain single-task step on the same tokens) is timed beside the student's step at its batch
    assert sweep["prefix b2"]["vs_peer"] > 0 and "vs_peer" not in sweep["before b2"], sweep
    step = result["student_step[tiny-t5]"]
    assert step["project_syncs"] == 0 and step["ms_per_step"] > 0
    assert result["scoring"]["rank_same"] == result["scoring"]["questions"] == 16
    assert result["hf_engine"]["greedy_same"] == 16 and result["hf_engine"]["compiled_frames"] == 0

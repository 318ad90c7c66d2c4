"""Run the TinyLLM distillation workflow: ``python jobs/distill.py [--config PATH] [--set K=V ...] [--output-dir DIR]``.

With no arguments it runs ``configs/quickstart.yaml`` on an embedded local Ray. Inside
``ray job submit -- python jobs/distill.py ...`` (or with ``RAY_ADDRESS`` set) it runs on that cluster.
Thin on purpose: argv -> config -> ``tinyllm_ray.pipeline.run``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a submitted working dir is not installed

from tinyllm_ray import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli.main(["distill", *sys.argv[1:]]))

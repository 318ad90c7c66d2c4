"""tinyllm_ray: distil several teacher LLMs into one small student on Ray (the TinyLLM method).

Run the whole workflow with ``python jobs/distill.py --config configs/quickstart.yaml`` or the
``tinyllm distill`` console script; ``tinyllm_ray.pipeline.run(config)`` is the Python entry point.
"""

__version__ = "0.1.0"

"""``python -m tinyllm_ray.model_files REF``: the same as ``tinyllm models fetch REF``."""

import sys

from tinyllm_ray.model_files.references import main

sys.exit(main())

"""Typed run configuration: the schema (``schema.py``: ``Config`` and the data, teachers and student sections;
``training.py``: train, eval, tune; ``environment.py``: output, ray, tracking; ``strict.py``: the strict types they
share), loading (``loading.py``) and checks (``checks.py``).

Everything is re-exported here, so callers import from ``tinyllm_ray.config``.
"""

from tinyllm_ray.config.checks import is_local_model, tune_errors, validate, validate_against_data, validate_models
from tinyllm_ray.config.environment import OutputConfig, RayConfig
from tinyllm_ray.config.loading import (
    apply_override,
    from_dict,
    load_config,
    parse_yaml,
    read_yaml,
    to_yaml,
    with_absolute_paths,
)
from tinyllm_ray.config.schema import (
    PRECOMPUTED_TEACHERS,
    SYNTHETIC_TEACHERS,
    Config,
    ConfigError,
    DataConfig,
    StudentConfig,
    TeacherConfig,
    TeacherPromptConfig,
    precomputed_teachers,
)
from tinyllm_ray.config.strict import Bool, Float, Int, Str
from tinyllm_ray.config.training import EvalConfig, RangeConfig, SweepValues, TrainConfig, TuneConfig

__all__ = [
    "PRECOMPUTED_TEACHERS",
    "SYNTHETIC_TEACHERS",
    "Bool",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "Float",
    "Int",
    "OutputConfig",
    "RangeConfig",
    "RayConfig",
    "Str",
    "StudentConfig",
    "SweepValues",
    "TeacherConfig",
    "TeacherPromptConfig",
    "TrainConfig",
    "TuneConfig",
    "apply_override",
    "from_dict",
    "is_local_model",
    "load_config",
    "parse_yaml",
    "precomputed_teachers",
    "read_yaml",
    "to_yaml",
    "tune_errors",
    "validate",
    "validate_against_data",
    "validate_models",
    "with_absolute_paths",
]

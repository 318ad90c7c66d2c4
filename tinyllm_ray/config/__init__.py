"""Typed run configuration: the schema (``schema.py``), loading (``loading.py``) and checks (``checks.py``).

Everything is re-exported here, so callers import from ``tinyllm_ray.config``.
"""

from tinyllm_ray.config.checks import is_local_model, tune_errors, validate, validate_against_data
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
    Bool,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    Float,
    Int,
    OutputConfig,
    RangeConfig,
    RayConfig,
    Str,
    StudentConfig,
    SweepValues,
    TeacherConfig,
    TrainConfig,
    TuneConfig,
    precomputed_teachers,
)

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
    "with_absolute_paths",
]

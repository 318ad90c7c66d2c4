"""The config sections that say where a run lives, runs and records, not what it computes: ``output`` (the run
directory), ``ray`` (the cluster) and ``tracking`` (TensorBoard, MLflow). A resumed run may differ in them
(``runs.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from tinyllm_ray.config.strict import STRICT, Bool, Int, Str


@dataclass(config=STRICT)
class OutputConfig:
    """Where the run directory lives and what to do when it exists."""

    dir: Str = "runs"
    """Parent directory of run directories (on a multi-node cluster: storage every node sees)."""
    run_name: Str = Field(default="quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Run directory name under ``dir``."""
    if_exists: Literal["resume", "error", "new"] = "resume"
    """Run dir already there: ``resume`` (same config only: reuse finished stages), ``error``, or ``new`` (``<name>-2``, ...)."""
    access: Literal["owner", "group-read", "group-write"] = "owner"
    """Who may open the run directory (and so its exports): ``owner`` only (mode 0700), ``group-read`` (0750) or
    ``group-write`` (0770, a team resuming each other's runs on shared storage; resuming a sweep then trusts
    the group, as its saved state is loaded with pickle)."""


@dataclass(config=STRICT)
class RayConfig:
    """How the driver reaches Ray."""

    address: Str | None = None
    """``None``: the cluster of ``ray job submit``/``RAY_ADDRESS``/``ray start`` if any, else a new local one."""
    num_cpus: Int | None = Field(default=None, ge=1)
    """CPUs of a new local cluster (default: all)."""


@dataclass(config=STRICT)
class MlflowConfig:
    """Where the student's training is recorded in MLflow (``pip install 'tinyllm-ray[tracking]'``): one MLflow
    run per training run (per trial in a sweep) with its parameters (loss weights, lr, batch size, student
    model, teachers, ...) and the same metrics as the TensorBoard files."""

    tracking_uri: Str | None = None
    """An MLflow tracking server (``http://host:5000``), a database (``sqlite:///mlflow.db``: needs the full
    ``mlflow`` package) or a ``file://`` store; ``None``: the file store ``<run>/mlruns``. A multi-node run needs
    a server, or a ``file://`` path on storage every node sees."""
    experiment: Str = "tinyllm"
    """The MLflow experiment (created when it does not exist)."""
    run_name: Str | None = None
    """The MLflow run's name; ``None``: the run directory's name (a sweep's trials: Tune's trial names)."""
    tags: dict[Str, Str] = Field(default_factory=dict)
    """Extra tags on every MLflow run."""


@dataclass(config=STRICT)
class TrackingConfig:
    """Experiment tracking of the student's training (scalars per logged step and per evaluation). Changing
    it never retrains: a resumed run with other tracking settings reuses its finished stages."""

    tensorboard: Bool = True
    """Write TensorBoard event files under ``<run>/tensorboard/`` (a sweep's trials: under
    ``<run>/tune/trials/<trial id>/tensorboard/``, beside Ray Tune's own in ``<run>/tune/sweep/``)."""
    mlflow: MlflowConfig | None = None
    """Also record the training in MLflow (``None``: off)."""

"""The training loop's testing hook: one injected worker failure, to test restarts from a checkpoint.

Testing only: ``TINYLLM_TEST_FAIL_AT_STEP=k`` with ``TINYLLM_TEST_FAIL_MARKER=FILE`` in the driver's
environment makes the last worker raise once after step k (the marker file records that it did, so the
restarted worker group goes on). Read by ``train_student``, never part of the run config.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

FAIL_AT_STEP_ENV, FAIL_MARKER_ENV = "TINYLLM_TEST_FAIL_AT_STEP", "TINYLLM_TEST_FAIL_MARKER"

@dataclasses.dataclass(frozen=True)
class FailOnce:
    """The testing hook's order (see ``FAIL_AT_STEP_ENV``): the last worker raises after ``step`` unless
    ``marker`` exists, and writes ``marker`` first."""

    step: int
    marker: str

    @classmethod
    def from_env(cls) -> FailOnce | None:
        step = os.environ.get(FAIL_AT_STEP_ENV)
        return cls(int(step), os.environ[FAIL_MARKER_ENV]) if step else None

    def maybe_raise(self, step: int, rank: int, world: int) -> None:
        """Raise on the last worker after ``step`` once (the marker file records that it did)."""
        if step != self.step or rank != world - 1:
            return
        marker = Path(self.marker)
        if marker.exists():
            return
        marker.write_text(f"failed once at step {step}\n")
        raise RuntimeError(f"injected worker failure at step {step} ({FAIL_AT_STEP_ENV}, testing only)")

"""Freeing the Train workers' placement groups of trials that ended: a Tune callback for trials stopped while
others run, and a sweep of this job's leftover groups once no trial runs."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
import ray.tune
from ray.util.placement_group import PlacementGroup

from tinyllm_ray.student.worker import PLACEMENT_GROUP

log = logging.getLogger("tinyllm_ray.sweep")


class ReclaimStoppedTrainRuns(ray.tune.Callback):
    """Frees the workers' placement group of a Train run whose trial Tune stopped (ASHA).

    Tune stops a trial by ending its actor; the trial's Train controller dies with it and Ray Train's own
    ``PlacementGroupCleaner`` then removes the workers' placement group, seconds later (it polls), or never
    where Ray's State API fails (dashboard off, several Ray instances on the machine: "Found multiple active
    Ray instances") and the next trials wait for ever. Every trial's reports carry its workers' group id
    (``PLACEMENT_GROUP``), so the group of a trial that ended is removed here ``delay_s`` after, while other
    trials run. A trial stopped before its first report has no id: ``reclaim_train_groups`` frees its group
    once no trial runs.
    """

    def __init__(self, delay_s: float = 0.5):
        self.delay_s = delay_s
        self.due: list[tuple[float, str]] = []
        self.unknown = False

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        group = (getattr(trial, "last_result", None) or {}).get(PLACEMENT_GROUP)
        if group:
            self.due.append((time.monotonic() + self.delay_s, group))
        else:
            self.unknown = True

    on_trial_error = on_trial_complete

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        for at, group in [d for d in self.due if d[0] <= now]:
            self.due.remove((at, group))
            remove_group(group)
        if self.unknown and not any(t.status == "RUNNING" for t in trials):
            self.unknown = False
            reclaim_train_groups()


def remove_group(pg_id: str) -> None:
    """Remove one placement group by id, if it still exists."""
    entry = ray.util.placement_group_table().get(pg_id)
    if not entry or entry.get("state") == "REMOVED":
        return
    log.info("tune: removing the placement group %s of a trial that ended", pg_id)
    try:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
    except Exception as err:  # noqa: BLE001 -- removed by Ray Train meanwhile
        log.debug("tune: placement group %s: %s", pg_id, err)


def reclaim_train_groups() -> None:
    """Remove this job's placement groups that hold only CPUs/GPUs: call it only while no trial of it runs.

    A placement group's id ends with the id of the job that created it (the driver's; Train controllers are
    actors of the same job), so other jobs' groups on a shared cluster are never touched."""
    job = ray.get_runtime_context().get_job_id()
    for pg_id, entry in ray.util.placement_group_table().items():
        bundles = list(entry.get("bundles", {}).values())
        if (pg_id.endswith(job) and entry.get("state") == "CREATED" and bundles
                and all(set(b) <= {"CPU", "GPU"} for b in bundles)):
            remove_group(pg_id)

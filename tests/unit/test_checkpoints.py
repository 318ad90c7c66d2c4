"""The student run's checkpoints (tinyllm_ray.student.checkpoints): where a run resumes when its latest does not
load, and how a checkpoint reaches the run's storage (no Ray cluster)."""

from __future__ import annotations

import torch


def test_older_checkpoints_are_the_earlier_steps_beside_it_newest_first(tmp_path) -> None:
    import ray.train

    from tinyllm_ray.student.checkpoints import older_checkpoints

    for step in (2, 4, 6, 10):
        (tmp_path / f"checkpoint_step{step:07d}").mkdir()
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")
    latest = ray.train.Checkpoint.from_directory(str(tmp_path / "checkpoint_step0000006"))
    assert [c.path.rsplit("/", 1)[-1] for c in older_checkpoints(latest)] == ["checkpoint_step0000004",
                                                                               "checkpoint_step0000002"]


def test_checkpoints_upload_in_the_background_from_gpu_workers() -> None:
    import ray.train

    from tinyllm_ray.student.checkpoints import upload_mode

    assert upload_mode(torch.device("cuda", 0)) == ray.train.CheckpointUploadMode.ASYNC
    assert upload_mode(torch.device("cpu")) == ray.train.CheckpointUploadMode.SYNC

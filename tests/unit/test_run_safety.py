"""Runs that are safe against their users (issue #39): one driver per run directory (``run_lock``), an address
where no cluster answers named in seconds (``connect.check_reachable``). No Ray: ``ray.init`` is a tripwire."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from tinyllm_ray import connect, pipeline, prepare, run_lock
from tinyllm_ray.config import ConfigError


def _foreign_lock(run_dir: Path, pid: int, host: str | None = None, age_s: float = 0.0) -> Path:
    path = run_dir / run_lock.LOCK_FILE
    now = time.time()
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "ray_job_id": "raysubmit_x",
                                "started": now - 100, "heartbeat": now - age_s, "token": "other"}))
    return path


def test_a_second_driver_is_refused_with_one_line_naming_the_holder(tmp_path: Path) -> None:
    first = run_lock.hold(tmp_path)
    try:
        with pytest.raises(run_lock.RunBusyError) as err:
            run_lock.hold(tmp_path)
        message = str(err.value)
        assert "\n" not in message and f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert str(tmp_path) in message and "output.run_name" in message
    finally:
        first.release()
    assert not (tmp_path / run_lock.LOCK_FILE).exists()  # released: the next driver may run
    run_lock.hold(tmp_path).release()


def test_a_live_driver_of_another_host_holds_the_directory_until_its_heartbeat_stops(tmp_path: Path, caplog) -> None:
    _foreign_lock(tmp_path, pid=1, host="node-7", age_s=5)
    with pytest.raises(run_lock.RunBusyError, match="pid 1 on node-7, Ray job raysubmit_x"):
        run_lock.hold(tmp_path)
    _foreign_lock(tmp_path, pid=1, host="node-7", age_s=run_lock.STALE_S + 1)
    with caplog.at_level(logging.WARNING, logger="tinyllm_ray"):
        lock = run_lock.hold(tmp_path)
    assert "taking over the lock" in caplog.text and "pid 1 on node-7" in caplog.text and "heartbeat is" in caplog.text
    assert json.loads((tmp_path / run_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_the_lock_of_a_process_of_this_host_that_is_gone_is_taken_over_at_once(tmp_path: Path, caplog) -> None:
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    _foreign_lock(tmp_path, pid=int(gone.stdout), age_s=1)  # its heartbeat is fresh, its process is not
    with caplog.at_level(logging.WARNING, logger="tinyllm_ray"):
        run_lock.hold(tmp_path).release()
    assert "no longer runs" in caplog.text


def test_the_heartbeat_refreshes_the_lock_and_release_leaves_a_lock_taken_over(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.02)
    lock = run_lock.hold(tmp_path)
    first = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())["heartbeat"]
    time.sleep(0.2)
    assert json.loads((tmp_path / run_lock.LOCK_FILE).read_text())["heartbeat"] > first
    _foreign_lock(tmp_path, pid=1, host="node-7")  # another driver took it over meanwhile
    lock.release()
    assert json.loads((tmp_path / run_lock.LOCK_FILE).read_text())["host"] == "node-7"  # not removed: not ours


def test_a_run_whose_directory_is_held_stops_before_ray(tiny_models: Path, tmp_path: Path, monkeypatch) -> None:
    from tests.helpers import tiny_run_config
    from tinyllm_ray.config import from_dict

    def tripwire(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(pipeline, "connect_ray", tripwire)
    config = from_dict(tiny_run_config(tiny_models, tmp_path / "runs", "busy"))
    prepared = prepare.prepare(config)
    _foreign_lock(prepared.run_dir, pid=os.getppid(), age_s=1)  # a live process of this host
    with pytest.raises(run_lock.RunBusyError, match="is in use by another driver"):
        pipeline.run(config)
    assert not (prepared.run_dir / "logs").exists()  # nothing of the run was started


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_an_address_where_nothing_listens_is_named_in_seconds(monkeypatch) -> None:
    port = _dead_port()
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        connect.check_reachable(f"127.0.0.1:{port}", "RAY_ADDRESS")
    assert time.perf_counter() - start < connect.REACH_TIMEOUT_S + 1
    message = str(err.value)
    assert message.startswith(f"RAY_ADDRESS: nothing answers at 127.0.0.1:{port}") and "unset RAY_ADDRESS" in message
    for address in ("auto", "local", ""):
        connect.check_reachable(address, "ray.address")  # Ray's to find: no check
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        connect.check_reachable(f"ray://127.0.0.1:{server.getsockname()[1]}", "ray.address")


def test_connect_ray_checks_the_address_before_ray_init(monkeypatch) -> None:
    from tests.helpers import tiny_run_config
    from tinyllm_ray.config import from_dict

    def tripwire(*args, **kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(connect.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(connect.ray, "init", tripwire)
    config = from_dict(tiny_run_config(Path("m"), Path("out"), "r"))
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_dead_port()}")
    with pytest.raises(ConfigError, match="^RAY_ADDRESS: nothing answers"):
        connect.connect_ray(config)
    monkeypatch.delenv("RAY_ADDRESS")
    import dataclasses

    config = dataclasses.replace(config, ray=dataclasses.replace(config.ray, address=f"127.0.0.1:{_dead_port()}"))
    with pytest.raises(ConfigError, match="^ray.address: nothing answers"):
        connect.connect_ray(config)


def _config_file(tiny_models: Path, tmp_path: Path) -> Path:
    import yaml

    from tests.helpers import tiny_run_config

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config(tiny_models, tmp_path / "runs", "stopped")))
    return path


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_an_interrupted_run_ends_in_one_line_saying_what_is_kept_and_releases_its_lock(
        tiny_models: Path, tmp_path: Path, monkeypatch, capsys, how: str) -> None:
    import signal

    from tinyllm_ray import cli

    def interrupted_run(p, clock):
        (p.run_dir / "rationales").mkdir()  # a stage's work, to be kept
        os.kill(os.getpid(), getattr(signal, how))  # Ctrl-C, or what `ray job stop` sends
        time.sleep(10)
        raise AssertionError("the signal did not stop the run")

    monkeypatch.setattr(pipeline, "_run", interrupted_run)
    before, term_before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    # Python's own Ctrl-C handler, as a fresh `tinyllm` process has (an in-process vLLM engine of an earlier test
    # installs its own)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli.main(["distill", "--config", str(_config_file(tiny_models, tmp_path))]) == 130
    finally:
        signal.signal(signal.SIGINT, before)  # the CLI ignores a second Ctrl-C on its way out
    err = capsys.readouterr().err.strip().splitlines()
    run_dir = tmp_path / "runs" / "stopped"
    assert err[-1] == (f"interrupted: finished stages, stored rationales and checkpoints are kept in {run_dir}; run "
                       f"the same command again to resume")
    assert not any("Traceback" in line for line in err)
    assert (run_dir / "rationales").is_dir() and not (run_dir / run_lock.LOCK_FILE).exists()
    assert signal.getsignal(signal.SIGTERM) == term_before  # the CLI's own handler only while it runs

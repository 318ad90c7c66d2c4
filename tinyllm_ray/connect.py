"""Joining a running Ray cluster, or starting a local one: what ``ray.init`` needs said first.

``connect_ray(config)`` joins the cluster of ``ray.address`` / ``RAY_ADDRESS`` (``ray job submit`` sets it) when
there is one, after checking that something answers there (``check_reachable``: Ray would otherwise retry for
minutes), and starts a local Ray otherwise; on a quiet console the workers' output stays in Ray's logs.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time

import ray

from tinyllm_ray import console
from tinyllm_ray.config import Config, ConfigError

log = logging.getLogger("tinyllm_ray")


# How long the driver tries to reach a cluster's address before it says nothing answers there.
REACH_TIMEOUT_S = 5.0


def check_reachable(address: str, key: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """``ConfigError`` naming ``address`` and ``key`` when nothing accepts a connection at its host and port within
    ``timeout_s``: ``ray.init`` would instead retry for minutes, printing a warning every few seconds. Addresses
    without a port (``auto``, ``local``) are Ray's to find."""
    target = re.sub(r"^[a-z]+://", "", address.strip()).split("/", 1)[0]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    start = time.perf_counter()
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise ConfigError(f"{key}: nothing answers at {address} ({why} after {time.perf_counter() - start:.1f} s); "
                          f"start a Ray head there (ray start --head), or unset {key} to run on an embedded "
                          f"local Ray") from None


def connect_ray(config: Config) -> None:
    """Join a running cluster when there is one, else start a local Ray."""
    if ray.is_initialized():
        return
    if config.ray.address:
        check_reachable(config.ray.address, "ray.address")
    elif os.environ.get("RAY_ADDRESS"):  # what ray.init() joins when given no address
        check_reachable(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    # Quiet console: the workers' output stays in Ray's logs (``<run>/logs/ray``), Ray's own INFO lines too.
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING} if console.quiet() else {}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if config.ray.address:
        context = ray.init(address=config.ray.address, **quiet)
    else:
        context = ray.init(num_cpus=config.ray.num_cpus, **quiet) if config.ray.num_cpus else ray.init(**quiet)
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        # ray.init installs its own SIGTERM handler (sys.exit mid-stage); keep the one the CLI set, which stops the
        # run as Ctrl-C does: one line, what is kept, the lock released.
        signal.signal(signal.SIGTERM, on_sigterm)
    log.info("Ray cluster resources: %s", ray.cluster_resources())
    if getattr(context, "dashboard_url", None):
        console.say(f"Ray dashboard: http://{context.dashboard_url}")

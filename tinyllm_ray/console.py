"""What a run prints: one line per stage, live progress, warnings; the libraries' logs go to ``<run>/logs/``.

``tinyllm distill`` (and ``jobs/distill.py``) call ``setup(level)``. At the default level (``quiet``) the
console shows:

- the lines of the ``tinyllm_ray.console`` logger (``say``): a stage starting and ending, with its figures;
- live progress (``board``): per teacher rows done / total, rows/s and ETA; training step / total, loss,
  samples/s and ETA; sweep trials done / running / stopped. On a terminal it is redrawn in place; elsewhere
  (``ray job logs``, CI, a file) it is a plain line per task every ``PLAIN_EVERY_S`` seconds (30; the
  environment variable ``TINYLLM_PROGRESS_EVERY_S`` sets another);
- every warning and error, from any library.

``-v`` (``--log-level info``) also shows every INFO line of the project and the libraries (Ray Data's plans,
Ray Train's worker logs, vLLM, transformers), as before; ``--log-level debug`` more. Whatever the console
shows, ``<run>/logs/driver.log`` gets every record of the driver at INFO and above, and ``<run>/logs/ray``
points at Ray's session logs on the driver's node (each worker's output; ``ray logs`` reads the other nodes').

Progress from Ray workers (Train's rank 0, Tune trials) reaches the driver through a small named actor
(``ProgressActor``): workers call ``remote_update``; the board polls the actor while it renders. Everything
here is best effort: a missing board or actor never fails a run.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

CONSOLE = "tinyllm_ray.console"
LEVELS = ("quiet", "info", "debug")
PLAIN_EVERY_S = float(os.environ.get("TINYLLM_PROGRESS_EVERY_S", "30"))  # the tests set a few seconds
ACTOR_NAME = "tinyllm-progress"
_FORMAT = "%(asctime)s %(name)s: %(message)s"

say = logging.getLogger(CONSOLE).info
"""A console line (a stage starting or ending): shown at every level."""


@dataclass
class Task:
    """One line of progress: ``done`` of ``total`` ``unit``, with figures (``extra``) the producer adds."""

    name: str
    total: int | None
    unit: str
    done: float = 0
    extra: str = ""
    started: float = field(default_factory=time.monotonic)
    first_done: float = 0

    def line(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = (self.done - self.first_done) / elapsed
        parts = [f"{self.name}: {self.done:,.0f}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        if rate > 0:
            parts.append(f"{rate:,.1f} {self.unit}/s")
            if self.total and self.done < self.total:
                parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        if self.extra:
            parts.append(self.extra)
        return " | ".join(parts)


class Board:
    """The live progress area; also the console handler's way to print a line without breaking it."""

    def __init__(self, stream: TextIO, tty: bool, every_s: float = PLAIN_EVERY_S):
        self.stream, self.tty, self.every_s = stream, tty, every_s
        self.tasks: dict[str, Task] = {}
        self.lock = threading.RLock()
        self.drawn = 0  # lines of the live area now on screen (terminal only)
        self.last_plain = time.monotonic()
        self.pull: Callable[[], dict[str, dict[str, Any]]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str, total: int | None, unit: str, resumed_at: float = 0) -> None:
        with self.lock:
            self.tasks[name] = Task(name, total, unit, done=resumed_at, first_done=resumed_at)
        self._ensure_thread()

    def update(self, name: str, done: float | None = None, advance: float = 0, total: int | None = None,
               extra: str | None = None, unit: str = "steps") -> None:
        with self.lock:
            task = self.tasks.get(name)
            if task is None:
                self.start(name, total, unit, resumed_at=done or 0)
                task = self.tasks[name]
            task.done = done if done is not None else task.done + advance
            if total is not None:
                task.total = total
            if extra is not None:
                task.extra = extra

    def finish(self, name: str) -> None:
        """The task is over: off the live area; without a terminal, its final state as one last plain line."""
        with self.lock:
            task = self.tasks.pop(name, None)
            if task is not None and not self.tty:
                self.stream.write(f"{time.strftime('%H:%M:%S')} progress {task.line()}\n")
                self.stream.flush()
            self._redraw()

    def write(self, text: str) -> None:
        """Print ``text`` above the live area (a log line)."""
        with self.lock:
            self._clear()
            self.stream.write(text if text.endswith("\n") else text + "\n")
            self._draw()
            self.stream.flush()

    def render(self) -> None:
        """Redraw (terminal) or, every ``every_s`` seconds, print each task as a plain line."""
        self._pull_remote()
        with self.lock:
            if self.tty:
                self._redraw()
            elif self.tasks and time.monotonic() - self.last_plain >= self.every_s:
                self.last_plain = time.monotonic()
                stamp = time.strftime("%H:%M:%S")
                for task in self.tasks.values():
                    self.stream.write(f"{stamp} progress {task.line()}\n")
                self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            self._clear()
            self.tasks.clear()
            self.stream.flush()

    def _pull_remote(self) -> None:
        if self.pull is None:
            return
        try:
            remote = self.pull()
        except Exception:  # noqa: BLE001 -- progress is best effort; the run goes on without it
            return
        for text in remote["events"]:
            self.write(f"{time.strftime('%H:%M:%S')} {CONSOLE}: {text}")
        for name, fields in remote["tasks"].items():
            self.update(name, done=fields.get("done"), total=fields.get("total"), extra=fields.get("extra"),
                        unit=fields.get("unit", "steps"))
            if fields.get("finished"):
                self.finish(name)

    def _redraw(self) -> None:
        if self.tty:
            self._clear()
            self._draw()
            self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the area's first line, erase to the end
            self.drawn = 0

    def _draw(self) -> None:
        if self.tty and self.tasks:
            lines = [f"  {t.line()}" for t in self.tasks.values()]
            self.stream.write("\n".join(lines) + "\n")
            self.drawn = len(lines)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="tinyllm-progress", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5 if self.tty else 1.0):
            try:
                self.render()
            except Exception:  # noqa: BLE001 -- never let the display stop the run
                logging.getLogger("tinyllm_ray").debug("progress display failed", exc_info=True)


class _ConsoleHandler(logging.Handler):
    """Log records to the console through the board; at ``quiet`` only console lines and warnings pass."""

    def __init__(self, board: Board, level: str):
        super().__init__(logging.DEBUG if level == "debug" else logging.INFO)
        self.board, self.quiet = board, level == "quiet"
        self.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))

    def filter(self, record: logging.LogRecord) -> bool:
        if self.quiet:
            return record.levelno >= logging.WARNING or record.name == CONSOLE
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.board.write(self.format(record))
        except Exception:  # noqa: BLE001 -- as logging.StreamHandler: never raise from a log call
            self.handleError(record)


_board: Board | None = None
_level = "info"
_saved_root_level: int | None = None  # the root logger's level before ``setup``


def board() -> Board | None:
    """The run's progress board (``None`` unless ``setup`` made one: libraries, tests)."""
    return _board


def quiet() -> bool:
    return _board is not None and _level == "quiet"


def setup(level: str = "quiet", stream: TextIO | None = None) -> Board:
    """Console logging for a run at ``level`` (``LEVELS``); returns the progress board."""
    global _board, _level, _saved_root_level
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LEVELS)}")
    teardown()
    stream = stream or sys.stderr
    _level = level
    _board = Board(stream, tty=stream.isatty() and os.environ.get("TERM") != "dumb")
    root = logging.getLogger()
    _saved_root_level = root.level  # teardown puts it back
    root.addHandler(_ConsoleHandler(_board, level))
    root.setLevel(logging.DEBUG if level == "debug" else logging.INFO)
    logging.captureWarnings(True)  # Python warnings become log records: shown from WARNING up, and in the file
    if level == "quiet":
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TQDM_DISABLE", "1")  # hub downloads and other tqdm bars in the driver
    return _board


def teardown() -> None:
    """Back to no console handling (the process goes on: tests, a notebook): handlers removed, board closed, the
    root logger's level and Python's warnings as they were before ``setup``."""
    global _board, _level, _saved_root_level
    root = logging.getLogger()
    if _saved_root_level is not None:
        root.setLevel(_saved_root_level)
        logging.captureWarnings(False)
        _saved_root_level = None
    for handler in list(root.handlers):
        if isinstance(handler, _ConsoleHandler) or getattr(handler, "_tinyllm_run_log", False):
            root.removeHandler(handler)
            handler.close()
    if _board is not None:
        _board.close()
    _board, _level = None, "info"


def quiet_libraries() -> None:
    """Ray Data's and Tune's own console output off (at ``quiet``); called once Ray Data is importable."""
    if not quiet():
        return
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    # Ray Data warns once, when it first runs, that its bars are off: spend that "once" here, since we turned
    # them off on purpose (the board shows progress).
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")
    for name in ("ray.data", "ray.train", "ray.tune", "ray.air", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)


def attach_run_dir(run_dir: Path) -> logging.Handler:
    """Every driver log record (INFO and up, whatever the console shows) also to ``<run>/logs/driver.log``
    (appended: a resumed run adds to it), until ``detach`` (the end of the run)."""
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    handler = logging.FileHandler(logs / "driver.log", encoding="utf-8")
    handler._tinyllm_run_log = True  # removed by ``detach`` or ``teardown``
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def detach(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()


def link_ray_logs(run_dir: Path) -> None:
    """``<run>/logs/ray`` -> this node's Ray session logs (every worker's output), replaced each run."""
    try:
        import ray

        session = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"  # no public accessor
    except Exception:  # noqa: BLE001 -- not connected, or a Ray without it: nothing to link
        return
    link = run_dir / "logs" / "ray"
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        link.symlink_to(session, target_is_directory=True)


# --- progress from Ray workers --------------------------------------------------------------------------------


class ProgressActor:
    """Holds the latest progress fields per task name and the events (console lines) workers sent, until the
    driver's board takes them."""

    def __init__(self) -> None:
        self.fields: dict[str, dict[str, Any]] = {}
        self.events: list[str] = []

    def update(self, name: str, fields: dict[str, Any]) -> None:
        self.fields[name] = {**self.fields.get(name, {}), **fields}

    def event(self, text: str) -> None:
        self.events.append(text)

    def take(self) -> dict[str, Any]:
        out = {"tasks": self.fields, "events": self.events}
        self.fields = {k: v for k, v in self.fields.items() if not v.get("finished")}
        self.events = []
        return out


def serve_remote_progress() -> None:
    """Start the named progress actor of this job and let the board poll it (at ``quiet`` only)."""
    if not quiet():
        return
    import ray

    actor = ray.remote(num_cpus=0)(ProgressActor).options(name=ACTOR_NAME, get_if_exists=True).remote()
    _board.pull = lambda: ray.get(actor.take.remote(), timeout=5)
    _board._ensure_thread()  # polled from now on, even before the driver itself shows a task


_remote: Any = None


def _actor() -> Any:
    global _remote
    if _remote is None:
        try:
            import ray

            _remote = ray.get_actor(ACTOR_NAME)
        except Exception:  # noqa: BLE001 -- no board listens (tests, -v): progress is a no-op
            _remote = False
    return _remote


def remote_update(name: str, **fields: Any) -> None:
    """From a Ray worker: set ``name``'s progress on the driver's board (``finished=True`` removes it)."""
    if actor := _actor():
        actor.update.remote(name, fields)


def remote_event(text: str) -> None:
    """From a Ray worker: a console line on the driver (e.g. a resume); logged here as well."""
    logging.getLogger(CONSOLE).info(text)
    if actor := _actor():
        actor.event.remote(text)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

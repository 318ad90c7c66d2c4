"""The run's console (console.py): stage lines, live progress (redrawn on a terminal, plain lines elsewhere),
the quiet filter, the full log in the run directory, and progress sent from Ray workers. The whole console of
a real run is checked in tests/integration/test_pipeline.py (``first_run`` runs ``jobs/distill.py``)."""

from __future__ import annotations

import io
import logging

import pytest

from tinyllm_ray import console


@pytest.fixture
def stream():
    out = io.StringIO()
    yield out
    console.teardown()


def test_plain_progress_lines_where_there_is_no_terminal(stream):
    board = console.Board(stream, tty=False, every_s=0.0)
    board.start("teacher-a", total=80, unit="rows")
    board.update("teacher-a", advance=20)
    board.render()
    [line] = stream.getvalue().splitlines()
    assert "progress teacher-a: 20/80 rows (25%) | " in line and " rows/s | ETA " in line
    assert "\x1b[" not in stream.getvalue()  # no cursor codes in logs and CI
    board.every_s = 3600.0
    board.update("teacher-a", advance=20)
    board.render()  # too soon for the next plain line
    assert len(stream.getvalue().splitlines()) == 1
    board.update("teacher-a", done=80)
    board.finish("teacher-a")  # its final state, once, as the last plain line
    assert "80/80 rows (100%)" in stream.getvalue().splitlines()[-1]
    board.close()


def test_a_terminal_redraws_the_live_area_around_log_lines(stream):
    board = console.Board(stream, tty=True)
    board.start("train", total=10, unit="steps")
    board.update("train", done=3, extra="loss 1.25")
    board.render()
    assert stream.getvalue().startswith("  train: 3/10 steps (30%) | ") and "loss 1.25\n" in stream.getvalue()
    board.write("12:00:00 tinyllm_ray.console: teacher a: 48 rationales")
    text = stream.getvalue()
    # the area (one line) is erased, the log line printed, the area drawn again below it
    assert text.count("\x1b[1F\x1b[J") == 1
    assert text.index("teacher a: 48 rationales") < text.rindex("train: 3/10 steps")
    board.close()
    assert stream.getvalue().endswith("\x1b[1F\x1b[J")  # closing leaves no stale progress line


def test_quiet_shows_stage_lines_and_warnings_and_the_run_log_has_everything(stream, tmp_path):
    console.setup("quiet", stream)
    console.attach_run_dir(tmp_path)
    log_file = tmp_path / "logs" / "driver.log"
    console.say("teachers: teacher-a (1 x hf)")
    logging.getLogger("some.library").info("Execution plan: ...")  # (Ray's own loggers do not propagate:
    logging.getLogger("tinyllm_ray.teachers").info("teacher a: 80 to generate")  # quiet_libraries quiets them)
    logging.getLogger("another.library").warning("KV cache is small")
    shown = stream.getvalue()
    assert "teachers: teacher-a (1 x hf)" in shown and "KV cache is small" in shown
    assert "Execution plan" not in shown and "80 to generate" not in shown
    console.teardown()
    kept = log_file.read_text()
    for text in ("teachers: teacher-a", "Execution plan", "80 to generate", "KV cache is small"):
        assert text in kept


def test_verbose_shows_every_line(stream):
    console.setup("info", stream)
    logging.getLogger("some.library").info("Execution plan: ...")
    assert "Execution plan" in stream.getvalue()
    assert not console.quiet()


def test_progress_and_events_from_workers_reach_the_board(stream):
    actor = console.ProgressActor()  # the class the named actor runs, here in-process
    board = console.Board(stream, tty=False, every_s=0.0)
    board.pull = actor.take
    actor.update("train", {"done": 4, "total": 12, "unit": "steps", "extra": "loss 0.91"})
    actor.event("resumed from checkpoint: epoch 0, step 2")
    board.render()
    text = stream.getvalue()
    assert "resumed from checkpoint: epoch 0, step 2" in text
    assert "progress train: 4/12 steps (33%)" in text and "loss 0.91" in text
    actor.update("train", {"finished": True})
    board.render()
    assert board.tasks == {} and actor.take() == {"tasks": {}, "events": []}
    board.close()


def test_a_failing_progress_source_never_stops_the_display(stream):
    board = console.Board(stream, tty=False, every_s=0.0)

    def broken():
        raise ConnectionError("the actor is gone")

    board.pull = broken
    board.start("teacher-a", total=4, unit="rows")
    board.render()
    assert "teacher-a: 0/4 rows" in stream.getvalue()
    board.close()


def test_teardown_puts_the_root_loggers_level_and_warnings_back(stream):
    import warnings

    root, shown = logging.getLogger(), warnings.showwarning
    before = root.level
    root.setLevel(logging.ERROR)
    try:
        console.setup("debug", stream)
        assert root.level == logging.DEBUG and warnings.showwarning is not shown  # warnings become log records
        console.teardown()
        assert root.level == logging.ERROR and warnings.showwarning is shown
    finally:
        console.teardown()
        root.setLevel(before)

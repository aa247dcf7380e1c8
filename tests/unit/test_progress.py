"""Progress reports: a terminal gets one line rewritten in place, anything else a log line per step."""

from __future__ import annotations

import io
import logging

import pytest

from geolb.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_a_log_line_at_every_step_and_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    progress = Progress("flattening", logging.getLogger("test.progress"), stream)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for done in (0, 10, 24, 30, 60, 99, 100):
            progress(done, 100)
        progress.finish()
    assert [r.getMessage() for r in caplog.records] == [
        "flattening: 25 % (30 of 100)",
        "flattening: 50 % (60 of 100)",
        "flattening: 75 % (99 of 100)",
        "flattening: 100 % (100 of 100)",
    ]
    assert stream.getvalue() == ""


def test_a_jump_over_several_steps_is_one_line(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress("decoding", logging.getLogger("test.progress"), io.StringIO())
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress(458_435, 458_435)
    assert [r.getMessage() for r in caplog.records] == ["decoding: 100 % (458,435 of 458,435)"]


def test_a_terminal_gets_one_line_rewritten_and_no_log(caplog: pytest.LogCaptureFixture) -> None:
    stream = Terminal()
    progress = Progress("ranking", logging.getLogger("test.progress"), stream)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress(1, 4)
        progress(4, 4)
        progress.finish()
    assert caplog.records == []
    text = stream.getvalue()
    assert text.startswith("\rranking:  25 % (1 of 4)") and text.endswith("\rranking: 100 % (4 of 4)\x1b[K\n")

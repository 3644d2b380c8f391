"""A worker's rounds: at once when nudged, and a failing round never stops the next."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from structlog.testing import capture_logs

from carebase.persistence.work_queue import Rounds


async def test_a_nudge_starts_a_round_at_once_and_a_failure_is_survived() -> None:
    calls: list[int] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def round_() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            first.set()
            raise OSError("the database is down")
        second.set()

    rounds = Rounds("test_worker", 3600.0, structlog.get_logger("test"))
    with capture_logs() as logs:
        task = asyncio.create_task(rounds.run(round_))
        rounds.nudge()
        assert rounds.nudged
        await asyncio.wait_for(first.wait(), timeout=5)
        assert not rounds.nudged  # taken: the round cleared it
        rounds.nudge()  # an hour-long interval: only the nudge can start the second round
        await asyncio.wait_for(second.wait(), timeout=5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert calls == [0, 1]
    failed = [entry for entry in logs if entry["event"] == "test_worker_failed"]
    assert failed == [
        {
            "event": "test_worker_failed",
            "log_level": "warning",
            "error": "OSError",
            "detail": "the database is down",
        }
    ]


async def test_a_busy_worker_still_stops_when_cancelled() -> None:
    """Cancelled as its wait ends (it is nudged all the time), a worker stops every time:
    asyncio.wait_for lost such a cancellation on Python 3.11 and the worker ran on."""
    log = structlog.get_logger("test")
    for _ in range(200):
        rounds = Rounds("busy", 60.0, log)

        async def round_(rounds: Rounds = rounds) -> None:
            rounds.nudge()

        task = asyncio.create_task(rounds.run(round_))
        for _ in range(3):
            await asyncio.sleep(0)
        rounds.nudge()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done == {task}


async def test_a_stop_lets_the_batch_in_hand_finish_and_starts_no_other() -> None:
    """A graceful stop: the round's loop sees `stopping` between batches, so the batch it is
    in finishes (nothing left claimed) and the worker returns by itself, uncancelled."""
    batches: list[str] = []
    in_batch = asyncio.Event()
    release = asyncio.Event()
    rounds = Rounds("test_worker", 3600.0, structlog.get_logger("test"))

    async def round_() -> None:
        while not rounds.stopping:
            batches.append("claimed")
            in_batch.set()
            await release.wait()
            batches.append("marked")

    task = asyncio.create_task(rounds.run(round_))
    rounds.nudge()
    await asyncio.wait_for(in_batch.wait(), timeout=5)
    rounds.stop()
    release.set()
    await asyncio.wait_for(task, timeout=5)  # returned by itself: not cancelled
    assert batches == ["claimed", "marked"]
    assert not task.cancelled()


async def test_a_worker_stopped_before_its_first_round_never_starts_one() -> None:
    started: list[int] = []

    async def round_() -> None:
        started.append(1)

    rounds = Rounds("test_worker", 3600.0, structlog.get_logger("test"))
    rounds.stop()
    await asyncio.wait_for(rounds.run(round_), timeout=5)
    assert started == []

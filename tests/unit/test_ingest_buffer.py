"""The ingest buffer with a fake store: one INSERT per table per flush, a retry with the same
rows and token, a bound, and a last flush at close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest

from carebase.errors import DependencyUnavailable
from carebase.instants import instant
from carebase.persistence.clickhouse import StoreUnavailable
from carebase.services.telemetry.buffer import IngestBuffer, Table
from carebase.services.telemetry.ingest import clickhouse_text, clickhouse_time
from carebase.services.telemetry.privacy import truncate_ip

TABLES = {"a": Table(("x",)), "b": Table(("y",))}


class FakeStore:
    def __init__(self) -> None:
        self.inserts: list[tuple[str, bytes, str]] = []
        self.failures = 0
        self.refuse: bytes | None = None
        self.up = True

    async def ping(self) -> None:
        if not self.up:
            raise StoreUnavailable("down")

    async def insert(
        self, table: str, columns: Sequence[str], rows: bytes, *, token: str, fmt: str
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("down")
        if self.refuse is not None and self.refuse in rows:
            raise StoreUnavailable("Code: 27. Cannot parse input")
        self.inserts.append((table, rows, token))


def _buffer(store: FakeStore, **options: int) -> IngestBuffer:
    return IngestBuffer(store, tables=TABLES, **options)  # type: ignore[arg-type]


async def test_one_insert_per_table_per_flush() -> None:
    store = FakeStore()
    buffer = _buffer(store)
    for i in range(10):
        buffer.add("a", [b'{"x": %d}' % i])
        buffer.add("b", [b'{"y": %d}' % i])
    assert await buffer.flush() == 20
    assert [(table, rows.count(b"\n") + 1) for table, rows, _ in store.inserts] == [
        ("a", 10),
        ("b", 10),
    ]
    assert await buffer.flush() == 0  # nothing waiting: no empty INSERT
    assert len(store.inserts) == 2


async def test_a_failed_flush_is_retried_with_the_same_rows_and_token() -> None:
    store = FakeStore()
    buffer = _buffer(store)
    buffer.add("a", [b"1", b"2"])
    store.failures = 1
    assert await buffer.flush() == 0
    assert buffer.queued_rows == 2
    buffer.add("a", [b"3"])  # arrives meanwhile: a batch of its own
    assert await buffer.flush() == 3
    (_, first, token_1), (_, second, token_2) = store.inserts
    assert (first, second) == (b"1\n2", b"3")
    assert token_1 != token_2
    assert buffer.queued_rows == 0


async def test_a_full_buffer_refuses_with_503() -> None:
    store = FakeStore()
    buffer = _buffer(store, max_rows=5)
    buffer.add("a", [b"1"] * 5)
    with pytest.raises(DependencyUnavailable) as refused:
        buffer.add("b", [b"2"])
    assert refused.value.retry_after > 0
    await buffer.flush()
    buffer.add("b", [b"2"])  # room again once written


async def test_a_writer_waits_for_its_rows_and_hears_of_a_failure() -> None:
    store = FakeStore()
    buffer = _buffer(store)
    runner = asyncio.create_task(buffer.run())
    await asyncio.wait_for(buffer.write("a", [b"1"]), 2)  # flushed at once, not in a second
    assert store.inserts[0][1] == b"1"
    store.failures = 1
    with pytest.raises(DependencyUnavailable):
        await asyncio.wait_for(buffer.write("a", [b"2"]), 2)
    runner.cancel()
    await buffer.close()  # the failed rows are written at the last flush
    assert [rows for _, rows, _ in store.inserts] == [b"1", b"2"]


async def test_a_batch_the_store_keeps_refusing_is_dropped_not_retried_forever() -> None:
    store = FakeStore()
    store.refuse = b"poison"
    buffer = _buffer(store)
    buffer.add("a", [b"poison"])
    for _ in range(4):
        await buffer.flush()
    assert buffer.queued_rows == 1  # still retried: four failures
    buffer.add("a", [b"fine"])
    await buffer.flush()  # the fifth failure, with the store answering: dropped
    assert buffer.queued_rows == 0
    assert buffer.stats.dropped_rows == 1
    assert [rows for _, rows, _ in store.inserts] == [b"fine"]


async def test_a_down_store_never_makes_the_buffer_drop() -> None:
    store = FakeStore()
    buffer = _buffer(store)
    buffer.add("a", [b"1"])
    store.failures, store.up = 50, False
    for _ in range(10):
        await buffer.flush()
    assert buffer.queued_rows == 1
    store.failures, store.up = 0, True
    await buffer.flush()
    assert [rows for _, rows, _ in store.inserts] == [b"1"]


def test_clickhouse_text_matches_the_formatted_instant() -> None:
    for text in (
        "2026-11-30T09:15:02.120Z",
        "2026-11-30T09:15:02Z",
        "2026-11-30t09:15:02.1234567z",
        "2026-11-30T09:15:02.120+05:30",
        "2026-11-30T23:59:59.999-08:00",
    ):
        moment = instant(text)
        assert moment is not None
        assert clickhouse_text(text, moment) == clickhouse_time(moment)


async def test_close_writes_everything_accepted() -> None:
    store = FakeStore()
    buffer = _buffer(store, flush_rows=1000)
    buffer.add("a", [b"1"] * 7)
    await buffer.close()
    assert store.inserts[0][1].count(b"\n") == 6
    assert buffer.queued_rows == 0


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::"),
        ("::ffff:198.51.100.23", "198.51.100.0"),
        ("not-an-address", ""),
        (None, ""),
    ],
)
def test_addresses_are_truncated(given: str | None, stored: str) -> None:
    assert truncate_ip(given) == stored


def test_instants_are_held_in_utc_whatever_their_offset() -> None:
    """RFC 3339 allows offsets to ±23:59, PostgreSQL only to ±15:59: an event relayed with
    `-18:51` was a 500 at the database (schemathesis found it)."""
    moment = instant("2003-09-19T08:39:11-18:51")
    assert moment is not None
    assert moment.utcoffset() == timedelta(0)
    assert (moment.day, moment.hour, moment.minute) == (20, 3, 30)
    assert instant("0001-01-01T00:30:00+01:00") is None  # before year 1 in UTC
    assert instant("9999-12-31T23:30:00-01:00") is None  # after year 9999 in UTC

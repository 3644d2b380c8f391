"""The ingest buffer: rows wait in process and reach ClickHouse as one INSERT per table.

Small inserts are ClickHouse's classic failure (each one a part to merge; chdb pays a fixed
~5–9 ms each, GROUND.md), so requests only append encoded rows here and `run()` writes them:

- every `interval_s` (≤ 1 s), or as soon as `flush_rows` rows wait, or at once for a caller
  that awaits its rows (`write`: core's audit batches, whose answer means "stored");
- one INSERT per table per flush, with an `insert_deduplication_token` fixed when the
  flush's rows are taken: a failed flush is retried with the same rows and the same token,
  so a write ClickHouse did take (a timeout after the fact) is not stored twice;
- bounded: past `max_rows` unwritten rows, `add` refuses with `DependencyUnavailable`
  (503, Retry-After) rather than growing without end while ClickHouse is away;
- `close()` flushes what is left (shutdown stores every accepted row; SIGKILL loses at most
  the last interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from carebase.errors import DependencyUnavailable
from carebase.metrics import TELEMETRY_BUFFER_ROWS, TELEMETRY_DROPPED, TELEMETRY_FLUSH_SECONDS
from carebase.persistence.clickhouse import ClickHouse, StoreUnavailable

_log = structlog.get_logger("carebase.telemetry.buffer")

RETRY_AFTER_S = 2
POISON_FAILURES = 5
"""A batch that failed this often while ClickHouse answers is refused for what it holds (a
row it cannot read): dropped and logged, so it cannot block its table forever."""


@dataclass(frozen=True)
class Table:
    """A buffered table: its columns, and the format its rows are encoded in."""

    columns: tuple[str, ...]
    fmt: str = "JSONEachRow"

    @property
    def separator(self) -> bytes:
        return b"\n" if self.fmt == "JSONEachRow" else b""


@dataclass
class _Batch:
    """Rows of one table taken for one INSERT; the token is fixed once taken."""

    table: str
    rows: list[bytes]
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    failures: int = 0


@dataclass
class BufferStats:
    flushes: int = 0
    rows_written: int = 0
    failures: int = 0
    refused_rows: int = 0
    dropped_rows: int = 0
    last_flush_ms: float = 0.0


class IngestBuffer:
    def __init__(
        self,
        store: ClickHouse,
        *,
        tables: Mapping[str, Table],
        interval_s: float = 1.0,
        flush_rows: int = 20_000,
        max_rows: int = 200_000,
    ) -> None:
        self._store = store
        self._tables = dict(tables)
        self._interval_s = interval_s
        self._flush_rows = flush_rows
        self._max_rows = max_rows
        self._pending: dict[str, list[bytes]] = {table: [] for table in tables}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {table: [] for table in tables}
        self._retrying: list[_Batch] = []
        self._queued = 0
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self.stats = BufferStats()

    @property
    def queued_rows(self) -> int:
        """Rows accepted and not yet written (pending and retrying)."""
        return self._queued

    def ensure_room(self, rows: int) -> None:
        """`DependencyUnavailable` (503) unless `rows` more rows fit."""
        if self._queued + rows > self._max_rows:
            self.stats.refused_rows += rows
            TELEMETRY_DROPPED.labels("backlog").inc(rows)
            raise DependencyUnavailable(
                "Telemetry is writing a backlog; send this batch again shortly.",
                retry_after=RETRY_AFTER_S,
            )

    def add(self, table: str, rows: Sequence[bytes]) -> None:
        """Queue encoded rows (JSONEachRow lines, or RowBinary rows) for `table`; written
        within `interval_s`."""
        if not rows:
            return
        self.ensure_room(len(rows))
        self._pending[table].extend(rows)
        self._queued += len(rows)
        TELEMETRY_BUFFER_ROWS.set(self._queued)
        if len(self._pending[table]) >= self._flush_rows:
            self._wake.set()

    async def write(self, table: str, rows: Sequence[bytes]) -> None:
        """Queue rows and wait until ClickHouse has them (a flush starts at once)."""
        if not rows:
            return
        self.add(table, rows)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[table].append(done)
        self._wake.set()
        await done

    async def run(self) -> None:
        """Flush every interval, or sooner when nudged; until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write everything waiting now; answers the rows written. Never raises."""
        async with self._flush_lock:
            batches, self._retrying = self._retrying, []
            for table, rows in self._pending.items():
                if rows or self._waiters[table]:
                    batches.append(_Batch(table, rows, waiters=self._waiters[table]))
                    self._pending[table] = []
                    self._waiters[table] = []
            written = 0
            for batch in batches:
                written += await self._write(batch)
            return written

    async def _write(self, batch: _Batch) -> int:
        if not batch.rows:
            _resolve(batch.waiters, None)
            return 0
        started = time.perf_counter()
        table = self._tables[batch.table]
        try:
            await self._store.insert(
                batch.table,
                table.columns,
                table.separator.join(batch.rows),
                token=batch.token,
                fmt=table.fmt,
            )
        except (StoreUnavailable, OSError) as exc:
            self.stats.failures += 1
            batch.failures += 1
            _log.warning(
                "telemetry_flush_failed", table=batch.table, rows=len(batch.rows), error=str(exc)
            )
            # The same rows and token next time; whoever waited is told now (and retries).
            _resolve(
                batch.waiters,
                DependencyUnavailable("Telemetry's store is unavailable.", retry_after=5),
            )
            batch.waiters = []
            if batch.failures >= POISON_FAILURES and await self._store_answers():
                self._queued -= len(batch.rows)
                TELEMETRY_BUFFER_ROWS.set(self._queued)
                self.stats.dropped_rows += len(batch.rows)
                TELEMETRY_DROPPED.labels("poison").inc(len(batch.rows))
                _log.error(
                    "telemetry_batch_dropped",
                    table=batch.table,
                    rows=len(batch.rows),
                    failures=batch.failures,
                    error=str(exc),
                )
                return 0
            self._retrying.append(batch)
            return 0
        self._queued -= len(batch.rows)
        TELEMETRY_BUFFER_ROWS.set(self._queued)
        elapsed = time.perf_counter() - started
        TELEMETRY_FLUSH_SECONDS.observe(elapsed)
        self.stats.flushes += 1
        self.stats.rows_written += len(batch.rows)
        self.stats.last_flush_ms = round(elapsed * 1000, 3)
        _resolve(batch.waiters, None)
        return len(batch.rows)

    async def _store_answers(self) -> bool:
        try:
            await self._store.ping()
        except (StoreUnavailable, OSError):
            return False
        return True

    async def close(self) -> None:
        """The last flush: every accepted row is written, or logged as lost."""
        await self.flush()
        if self._retrying:
            await self.flush()  # one more try for a batch that failed just now
        if self._queued:
            _log.error("telemetry_rows_lost_at_shutdown", rows=self._queued)


def _resolve(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)

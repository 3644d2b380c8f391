"""The app pool's checkout against real PostgreSQL: more callers than connections, time-outs,
broken and cancelled callers — no connection is ever lost or handed to two callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from carebase.operations.devstack import EmbeddedStack
from carebase.persistence.pools import Checkout, IdleCheck

pytestmark = pytest.mark.integration


@pytest.fixture
async def checkout(stack: EmbeddedStack) -> AsyncIterator[Checkout]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        stack.database_url,
        min_size=1,
        max_size=3,
        open=False,
        timeout=2,
        check=IdleCheck(),
        kwargs={"autocommit": True},
    )
    await pool.open(wait=True)
    gate = Checkout(pool)
    yield gate
    await gate.close()


async def test_many_callers_share_few_connections_one_each(checkout: Checkout) -> None:
    in_use: set[int] = set()
    backends: set[int] = set()

    async def work() -> None:
        conn = await checkout.acquire()
        try:
            assert id(conn) not in in_use, "one connection handed to two callers"
            in_use.add(id(conn))
            cursor = await conn.execute("SELECT pg_backend_pid(), pg_sleep(0.002)")
            row = await cursor.fetchone()
            assert row is not None
            backends.add(row[0])
            in_use.discard(id(conn))
        finally:
            await checkout.release(conn)

    await asyncio.gather(*(work() for _ in range(200)))
    assert len(backends) <= 3
    assert checkout.lent <= 3


async def test_a_caller_that_waits_too_long_gets_the_pools_timeout(checkout: Checkout) -> None:
    held = [await checkout.acquire() for _ in range(3)]
    checkout.pool.timeout = 0.2
    with pytest.raises(PoolTimeout):
        await checkout.acquire()
    for conn in held:
        await checkout.release(conn)
    again = await checkout.acquire()  # nothing was lost to the timed-out caller
    await checkout.release(again)
    assert checkout.lent <= 3


async def test_a_cancelled_waiter_passes_its_connection_on(checkout: Checkout) -> None:
    held = [await checkout.acquire() for _ in range(3)]
    doomed = asyncio.create_task(checkout.acquire())
    patient = asyncio.create_task(checkout.acquire())
    await asyncio.sleep(0.01)
    await checkout.release(held.pop())  # handed to `doomed`, which is cancelled before it runs
    doomed.cancel()
    conn = await asyncio.wait_for(patient, 2)  # so the connection reaches the next waiter
    await checkout.release(conn)
    for other in held:
        await checkout.release(other)
    assert doomed.cancelled()
    assert checkout.lent <= 3


async def test_a_broken_connection_goes_back_and_a_waiter_gets_a_new_one(
    checkout: Checkout,
) -> None:
    held = [await checkout.acquire() for _ in range(3)]
    waiting = asyncio.create_task(checkout.acquire())
    await asyncio.sleep(0.01)
    broken = held.pop()
    await broken.close()
    await checkout.release(broken)
    replacement = await asyncio.wait_for(waiting, 5)
    assert not replacement.closed
    cursor = await replacement.execute("SELECT 1")
    assert await cursor.fetchone() == (1,)
    await checkout.release(replacement)
    for conn in held:
        await checkout.release(conn)


async def test_a_connection_left_in_a_transaction_is_not_reused_as_is(checkout: Checkout) -> None:
    conn = await checkout.acquire()
    await conn.execute("BEGIN")
    await checkout.release(conn)  # not idle: back to the pool, which rolls it back
    again = await checkout.acquire()
    cursor = await again.execute("SELECT now() = statement_timestamp()")
    assert await cursor.fetchone() == (True,)  # not inside the abandoned transaction
    await checkout.release(again)

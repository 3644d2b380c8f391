"""Rehab-pose frames: core mints a session token, telemetry takes that session's binary
batches (and nothing else), checks every float, and stores each batch once."""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from support import Clinic

from carebase.apps.telemetry import TelemetryApp
from carebase.persistence.clickhouse import ClickHouse
from carebase.services.appointments import new_uid

FRAME = struct.Struct("<II132f")


def encode(frames: list[tuple[int, int, list[float]]]) -> bytes:
    """The wire layout: per frame uint32 number, uint32 ms, 33 × (x, y, z, visibility)."""
    return b"".join(FRAME.pack(number, t_ms, *values) for number, t_ms, values in frames)


def pose(n: int, *, first: int = 0) -> list[tuple[int, int, list[float]]]:
    return [
        (first + i, (first + i) * 33, [0.5, 0.25, -0.1, 0.9] * 33)  # x, y, z, visibility
        for i in range(n)
    ]


def _appointment(
    admin_conn: psycopg.Connection[tuple[object, ...]],
    place: Clinic,
    *,
    starts: timedelta = -timedelta(minutes=10),
    minutes: int = 45,
    status: str = "in_progress",
) -> str:
    start = datetime.now(UTC) + starts
    end = start + timedelta(minutes=minutes)
    row = admin_conn.execute(
        "INSERT INTO scheduling.appointments (organization_id, uid, specialist_id, patient_id,"
        " title, status, starts_at, ends_at, blocked, time_zone)"
        " VALUES (%s, %s, %s, %s, 'Rehab', %s, %s, %s, tstzrange(%s, %s), 'UTC') RETURNING id",
        (
            place.org,
            new_uid(),
            place.specialist_id,
            place.patient_id,
            status,
            start,
            end,
            start,
            end,
        ),
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def session(
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[tuple[object, ...]],
    client: httpx.AsyncClient,
) -> Callable[..., Any]:
    """An appointment in progress and its patient's session token from core."""

    async def make() -> tuple[Clinic, str, dict[str, str]]:
        place = clinic()
        appointment = _appointment(admin_conn, place)
        answer = await client.post(
            f"/v1/appointments/{appointment}/telemetry-session", headers=place.patient.auth
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["session_id"] == appointment
        return place, appointment, {"Authorization": f"Bearer {body['token']}"}

    return make


def _frames(store: ClickHouse, session_id: str) -> list[tuple[Any, ...]]:
    return store.client.query(
        "SELECT frame_number, t_ms, landmarks, batch_seq, actor_hash FROM telemetry.pose_frames"
        " WHERE session_id = {s:UUID} ORDER BY frame_number",
        parameters={"s": session_id},
    ).result_rows


async def test_a_session_batch_is_stored_once(
    session: Callable[..., Any],
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
) -> None:
    place, appointment, token = await session()
    url = f"/v1/pose/sessions/{appointment}/frames"
    headers = {**token, "Content-Type": "application/octet-stream", "X-Batch-Seq": "0"}
    for _ in range(2):  # sent again after a lost answer: accepted, stored once
        answer = await telemetry.post(url, content=encode(pose(30)), headers=headers)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": 30, "rejected": []}
    packed = gzip.compress(encode(pose(10, first=30)))
    answer = await telemetry.post(
        url, content=packed, headers={**headers, "X-Batch-Seq": "1", "Content-Encoding": "gzip"}
    )
    assert answer.json() == {"accepted": 10, "rejected": []}
    await telemetry_app.buffer.flush()
    rows = _frames(clickhouse_store, appointment)
    assert [row[0] for row in rows] == list(range(40))
    number, t_ms, landmarks, seq, hashed = rows[31]
    assert (number, t_ms, seq) == (31, 31 * 33, 1)
    assert landmarks == pytest.approx([0.5, 0.25, -0.1, 0.9] * 33)
    assert len(hashed) == 32
    assert str(place.patient.user_id) not in hashed
    # The session's dashboard counts them (the answer checked against the contract).
    view = await telemetry.get(f"/v1/dashboards/sessions/{appointment}", headers=place.admin.auth)
    assert view.status_code == 200, view.text
    summary = view.json()["pose"]
    assert (summary["frames"], summary["minutes"]) == (40, 1)
    assert summary["first_at"].endswith("Z")


async def test_tokens_for_other_things_are_refused(
    session: Callable[..., Any],
    telemetry: httpx.AsyncClient,
    client: httpx.AsyncClient,
) -> None:
    place, appointment, token = await session()
    _, other_appointment, _ = await session()
    body = encode(pose(5))
    headers = {"Content-Type": "application/octet-stream", "X-Batch-Seq": "0"}
    wrong = await telemetry.post(
        f"/v1/pose/sessions/{other_appointment}/frames", content=body, headers={**headers, **token}
    )
    assert wrong.status_code == 403
    access = await telemetry.post(
        f"/v1/pose/sessions/{appointment}/frames",
        content=body,
        headers={**headers, **place.patient.auth},
    )
    assert access.status_code == 403  # an access token is no session token
    analytics = await telemetry.post(
        "/v1/analytics/batch",
        json={"batch": [{"message_id": "m1", "event": "E", "timestamp": "2026-11-30T09:00:00Z"}]},
        headers=token,
    )
    assert analytics.status_code == 403  # a session token sends that session's frames only
    assert (await client.get("/v1/me", headers=token)).status_code == 401  # and core refuses it


@pytest.mark.parametrize(
    ("body", "status", "encoding"),
    [
        (encode(pose(2))[:-1], 400, None),
        (b"", 400, None),
        (encode(pose(1)) + b"\x00", 400, None),
        (b"not gzip at all", 400, "gzip"),
        (gzip.compress(encode(pose(2)))[:-8], 400, "gzip"),
        (gzip.compress(b"\x00" * 5_000_000), 400, "gzip"),  # a bomb: refused, never expanded
        (gzip.compress(encode(pose(121))), 400, "gzip"),
    ],
    ids=[
        "short",
        "empty",
        "one-extra-byte",
        "not-gzip",
        "truncated-gzip",
        "gzip-bomb",
        "121-frames",
    ],
)
async def test_malformed_batches_are_400(
    session: Callable[..., Any],
    telemetry: httpx.AsyncClient,
    body: bytes,
    status: int,
    encoding: str | None,
) -> None:
    _, appointment, token = await session()
    headers = {**token, "Content-Type": "application/octet-stream", "X-Batch-Seq": "0"}
    if encoding:
        headers["Content-Encoding"] = encoding
    answer = await telemetry.post(
        f"/v1/pose/sessions/{appointment}/frames", content=body, headers=headers
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


async def test_bad_floats_are_422_naming_each_frame(
    session: Callable[..., Any], telemetry: httpx.AsyncClient
) -> None:
    _, appointment, token = await session()
    frames = pose(6)
    frames[1][2][0] = math.nan
    frames[3][2][5] = math.inf
    frames[4][2][3] = 1.5  # a visibility
    frames[5][2][7] = -0.01  # a visibility
    answer = await telemetry.post(
        f"/v1/pose/sessions/{appointment}/frames",
        content=encode(frames),
        headers={**token, "Content-Type": "application/octet-stream", "X-Batch-Seq": "0"},
    )
    assert answer.status_code == 422
    assert [(e["pointer"], e["code"]) for e in answer.json()["errors"]] == [
        ("/body/frames/1", "not_finite"),
        ("/body/frames/3", "not_finite"),
        ("/body/frames/4", "out_of_range"),
        ("/body/frames/5", "out_of_range"),
    ]


async def test_withdrawn_pose_consent_drops_frames(
    session: Callable[..., Any],
    telemetry: httpx.AsyncClient,
    telemetry_app: TelemetryApp,
    clickhouse_store: ClickHouse,
) -> None:
    place, appointment, token = await session()
    withdraw = {"purpose": "pose_tracking", "granted": False, "notice_version": "v1"}
    assert (
        await telemetry.post("/v1/consents", json=withdraw, headers=place.patient.auth)
    ).is_success
    answer = await telemetry.post(
        f"/v1/pose/sessions/{appointment}/frames",
        content=encode(pose(3)),
        headers={**token, "Content-Type": "application/octet-stream", "X-Batch-Seq": "0"},
    )
    assert answer.json() == {"accepted": 3, "rejected": []}
    await telemetry_app.buffer.flush()
    assert _frames(clickhouse_store, appointment) == []


async def test_core_mints_session_tokens_for_participants_of_active_appointments(
    clinic: Callable[..., Clinic],
    admin_conn: psycopg.Connection[tuple[object, ...]],
    client: httpx.AsyncClient,
) -> None:
    place = clinic()
    now = datetime.now(UTC)
    active = _appointment(admin_conn, place)
    answer = await client.post(
        f"/v1/appointments/{active}/telemetry-session", headers=place.specialist.auth
    )
    assert answer.status_code == 200
    expires = datetime.fromisoformat(answer.json()["expires_at"])
    assert now + timedelta(minutes=39) < expires <= now + timedelta(minutes=41)  # end + 5 min
    long = _appointment(admin_conn, place, starts=timedelta(hours=1), minutes=600)
    answer = await client.post(
        f"/v1/appointments/{long}/telemetry-session", headers=place.patient.auth
    )
    assert datetime.fromisoformat(answer.json()["expires_at"]) <= now + timedelta(
        hours=2, seconds=5
    )

    staff = await client.post(
        f"/v1/appointments/{active}/telemetry-session", headers=place.staff.auth
    )
    assert staff.status_code == 403
    ended = _appointment(admin_conn, place, starts=-timedelta(hours=3), minutes=60)
    gone = await client.post(
        f"/v1/appointments/{ended}/telemetry-session", headers=place.patient.auth
    )
    assert gone.status_code == 409
    cancelled = _appointment(admin_conn, place, starts=timedelta(days=1), status="cancelled")
    off = await client.post(
        f"/v1/appointments/{cancelled}/telemetry-session", headers=place.patient.auth
    )
    assert off.status_code == 409
    other = clinic()
    foreign = await client.post(
        f"/v1/appointments/{active}/telemetry-session", headers=other.patient.auth
    )
    assert foreign.status_code == 404  # another clinic's appointment does not exist for them

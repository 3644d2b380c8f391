"""Rehab-pose frames: a compact binary batch in, checked, rows out in ClickHouse's RowBinary.

The layout (openapi/telemetry/pose.yaml): 536 bytes a frame, little-endian — uint32 frame
number, uint32 milliseconds since the session started, then 33 landmarks × (x, y, z,
visibility) float32. 1–120 frames a batch, optionally gzip. The landmark bytes are already
ClickHouse's `Array(Float32)` payload, so a stored row is a few constant bytes around a slice
of the request: no float is decoded in Python, numpy checks them all at once.
"""

from __future__ import annotations

import struct
import zlib
from collections import OrderedDict
from datetime import UTC, datetime
from uuid import UUID

import numpy as np

from carebase.errors import FieldError, Forbidden, MalformedRequest, ValidationFailed
from carebase.principal import Principal
from carebase.services.telemetry.buffer import IngestBuffer
from carebase.services.telemetry.ingest import IngestResult
from carebase.services.telemetry.privacy import PrivacyGate

LANDMARKS = 33
FRAME_BYTES = 8 + LANDMARKS * 4 * 4  # 536
MAX_FRAMES = 120
MAX_BYTES = FRAME_BYTES * MAX_FRAMES
_ARRAY_PREFIX = bytes([LANDMARKS * 4 | 0x80, (LANDMARKS * 4) >> 7])  # varint 132
_SEEN_BATCHES = 100_000


def clickhouse_uuid(value: UUID) -> bytes:
    """A UUID in RowBinary: its two 64-bit halves, each little-endian."""
    raw = value.bytes
    return raw[7::-1] + raw[15:7:-1]


def _string(value: str) -> bytes:
    data = value.encode()
    return bytes([len(data)]) + data  # hashes are 32 characters: a one-byte varint


class PoseIngest:
    def __init__(self, *, privacy: PrivacyGate, buffer: IngestBuffer) -> None:
        self._privacy = privacy
        self._buffer = buffer
        # Batches already taken, per process. A repeat that reaches another process is
        # stored again and merged away (ReplacingMergeTree on the frame's key); pose minutes
        # count distinct minutes, so they never count it twice.
        self._seen: OrderedDict[tuple[UUID, int], None] = OrderedDict()

    async def frames(
        self,
        principal: Principal,
        session_id: UUID,
        body: bytes,
        *,
        batch_seq: int,
        gzipped: bool,
    ) -> IngestResult:
        if principal.session_id != session_id or principal.organization_id is None:
            raise Forbidden("This session token is for another session.")
        data = _inflate(body) if gzipped else body
        count, remainder = divmod(len(data), FRAME_BYTES)
        if remainder or not 1 <= count <= MAX_FRAMES:
            raise MalformedRequest(
                f"A batch is 536 × n bytes with 1 ≤ n ≤ {MAX_FRAMES}; this one is "
                f"{len(data)} bytes."
            )
        _check(data, count)
        key = (session_id, batch_seq)
        if key in self._seen:
            return IngestResult(count, [])
        state = await self._privacy.state(principal.organization_id)
        hashed = state.hash(principal.user_id) if principal.user_id else ""
        excluded = state.excludes(principal.user_id, "pose_tracking", hashed or None)
        if excluded:
            self._privacy.dropped.add(excluded, count)
            return IngestResult(count, [])
        prefix = (
            clickhouse_uuid(principal.organization_id)
            + clickhouse_uuid(session_id)
            + _string(hashed)
            + struct.pack("<I", batch_seq)
        )
        received = struct.pack("<q", int(datetime.now(UTC).timestamp() * 1000))
        rows = [
            b"".join(
                (
                    prefix,
                    data[start : start + 8],  # frame number, t_ms: two UInt32, as sent
                    _ARRAY_PREFIX,
                    data[start + 8 : start + FRAME_BYTES],
                    received,
                )
            )
            for start in range(0, len(data), FRAME_BYTES)
        ]
        self._buffer.add("pose_frames", rows)
        self._seen[key] = None
        if len(self._seen) > _SEEN_BATCHES:
            self._seen.popitem(last=False)
        return IngestResult(count, [])


def _inflate(body: bytes) -> bytes:
    """gzip, bounded: more than a batch's worth of output is refused, not expanded."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, MAX_BYTES + 1)
    except zlib.error:
        raise MalformedRequest("The body is not valid gzip.") from None
    if len(data) > MAX_BYTES or inflater.unconsumed_tail:
        raise MalformedRequest(f"A batch holds at most {MAX_FRAMES} frames.")
    if not inflater.eof:
        raise MalformedRequest("The gzip body is truncated.")
    return data


def _check(data: bytes, count: int) -> None:
    """Every coordinate finite, every visibility in [0, 1]; 422 naming each bad frame."""
    frames = np.frombuffer(data, dtype=np.uint8).reshape(count, FRAME_BYTES)
    values = frames[:, 8:].view("<f4")
    finite = np.isfinite(values).all(axis=1)
    visibility = values[:, 3::4]
    visible = ((visibility >= 0) & (visibility <= 1)).all(axis=1)
    if finite.all() and visible.all():
        return
    errors = []
    for index in np.flatnonzero(~(finite & visible)).tolist():
        reason = (
            ("A coordinate is NaN or infinite.", "not_finite")
            if not finite[index]
            else ("A visibility is outside [0, 1].", "out_of_range")
        )
        errors.append(FieldError(f"/body/frames/{index}", *reason))
    raise ValidationFailed(errors)

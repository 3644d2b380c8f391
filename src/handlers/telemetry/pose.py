"""Handlers for openapi/telemetry/pose.yaml."""

from __future__ import annotations

from uuid import UUID

from carebase.principal import Principal
from carebase.services.telemetry.pose import PoseIngest
from carebase.web.render import dumps
from carebase.web.results import Reply, accepted


class PoseHandlers:
    def __init__(self, *, ingest: PoseIngest) -> None:
        self._ingest = ingest

    async def ingest_pose_frames(
        self,
        principal: Principal,
        *,
        session_id: UUID,
        body: bytes,
        x_batch_seq: int,
        content_encoding: str | None,
    ) -> Reply:
        result = await self._ingest.frames(
            principal,
            session_id,
            body,
            batch_seq=x_batch_seq,
            gzipped=content_encoding == "gzip",
        )
        return accepted(dumps(result.as_json()))

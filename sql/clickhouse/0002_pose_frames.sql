-- migrate:up
-- Rehab-pose frames as sent: 33 landmarks × (x, y, z, visibility) per frame. A batch sent
-- again is dropped by the process that took it; one that reaches another process merges away
-- on the frame's key. Kept six months (aggregates: seven years).
CREATE TABLE IF NOT EXISTS telemetry.pose_frames (
    organization_id UUID,
    session_id      UUID,
    actor_hash      String,
    batch_seq       UInt32,
    frame_number    UInt32,
    t_ms            UInt32,
    landmarks       Array(Float32),
    received_at     DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (organization_id, session_id, frame_number, batch_seq)
TTL toDateTime(received_at) + INTERVAL 183 DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- migrate:down
DROP TABLE IF EXISTS telemetry.pose_frames;

-- The last heartbeat of each activity that sent one (loom.heartbeat), keyed by the seq of its
-- ACTIVITY_SCHEDULED event: its details reach the activity's next attempt, on this worker or
-- on another after a crash. details: JSON text, NULL when no heartbeat carried any. Written
-- under the workflow's lease fence; deleted when the workflow ends.
CREATE TABLE activity_heartbeats (
    workflow_id TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    activity    TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    details     TEXT,
    beat_at     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workflow_id, seq)
);

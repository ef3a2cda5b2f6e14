-- The last heartbeat of each activity that sent one (loom.heartbeat), keyed by the seq of its
-- ACTIVITY_SCHEDULED event: its details reach the activity's next attempt, on this worker or
-- on another after a crash. details: JSON text, NULL when no heartbeat carried any. Written
-- under the workflow's lease fence; deleted when the workflow ends.
CREATE TABLE activity_heartbeats (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    activity    TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    details     TEXT,
    beat_at     REAL NOT NULL,
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;

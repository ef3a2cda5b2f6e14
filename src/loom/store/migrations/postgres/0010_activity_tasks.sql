-- Activity tasks: an activity whose queue its workflow's worker does not serve is dispatched
-- here, in the transaction that records its scheduling, and run by a worker serving its queue.
-- One row per attempt. state: 'ready' (claimable once ready_at is due), 'leased' (ready_at is
-- the lease's end, so a dead worker's task is claimable again then), 'done' (ready_at NULL;
-- outcome holds the attempt's outcome, encoded like any payload, until the workflow records
-- it and deletes the row in the same transaction). Arguments are not copied: the worker reads
-- them from the ACTIVITY_SCHEDULED event (workflow_id, seq).
CREATE TABLE activity_tasks (
    workflow_id      TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,
    run_id           TEXT,
    queue            TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    activity         TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'ready',
    ready_at         DOUBLE PRECISION,
    lease_owner      TEXT,
    lease_epoch      INTEGER NOT NULL DEFAULT 0,
    lease_expires    DOUBLE PRECISION,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    outcome          TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workflow_id, seq, attempt)
);
-- The claim: per queue, by priority, then oldest due first, among the claimable rows.
CREATE INDEX activity_tasks_claim ON activity_tasks (queue, priority, ready_at) WHERE ready_at IS NOT NULL;
-- What is in progress on a queue (its concurrency limit counts these): the leased rows, few.
CREATE INDEX activity_tasks_leased ON activity_tasks (queue) WHERE state = 'leased';

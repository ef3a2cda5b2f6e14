-- Task queues: each workflow belongs to one queue (a worker serves some queues or all) and has
-- a priority (smaller runs first among the ready work of its queue).
ALTER TABLE workflows ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE workflows ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- The claim of a worker serving named queues: per queue, by priority, then oldest due first.
CREATE INDEX workflows_queue_ready ON workflows (queue, priority, ready_at) WHERE ready_at IS NOT NULL;
-- The claim of a worker serving every queue: by priority, then oldest due first.
CREATE INDEX workflows_priority_ready ON workflows (priority, ready_at) WHERE ready_at IS NOT NULL;
-- What is in progress on a queue (its concurrency limit counts these): the leased rows, few.
CREATE INDEX workflows_queue_leased ON workflows (queue) WHERE lease_owner IS NOT NULL;

-- The limits of a queue (NULL: none), shared by every worker. The rate is counted in fixed
-- windows: window_count starts since window_start, at most rate_count per rate_period seconds.
CREATE TABLE queues (
    name         TEXT PRIMARY KEY,
    concurrency  INTEGER,
    rate_count   INTEGER,
    rate_period  REAL,
    window_start REAL NOT NULL DEFAULT 0,
    window_count INTEGER NOT NULL DEFAULT 0,
    updated_at   REAL NOT NULL
);

-- An activity running on a queue other than its workflow's holds a slot of its queue here
-- while it runs, so it counts against that queue's concurrency. lease_until follows the
-- workflow's lease (renewed with it): a dead worker's slot frees itself when it runs out.
CREATE TABLE activity_slots (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    queue       TEXT NOT NULL,
    owner       TEXT NOT NULL,
    lease_until REAL NOT NULL,
    PRIMARY KEY (workflow_id, seq)
);
CREATE INDEX activity_slots_queue ON activity_slots (queue, lease_until);
CREATE INDEX activity_slots_owner ON activity_slots (owner);

-- Workflows: one row each, the materialised view of the history plus scheduling columns.
-- ready_at: claimable when <= now (timer due, new work, or an expired lease); NULL = waits for
-- a signal or is finished. lease_epoch grows with every claim and fences stale writers.
CREATE TABLE workflows (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    status           TEXT NOT NULL,
    input            TEXT NOT NULL,
    state            TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    current_step     TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    last_seq         INTEGER NOT NULL,
    ready_at         REAL,
    lease_owner      TEXT,
    lease_epoch      INTEGER NOT NULL DEFAULT 0,
    cancel_requested TEXT
);
CREATE INDEX workflows_ready ON workflows (ready_at) WHERE ready_at IS NOT NULL;
CREATE INDEX workflows_status_created ON workflows (status, created_at);
CREATE INDEX workflows_created ON workflows (created_at);
CREATE INDEX workflows_name_created ON workflows (name, created_at);

-- The append-only history. The primary key makes a duplicate sequence number impossible.
CREATE TABLE events (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;

-- Signals sent but not yet consumed by a wait_for_signal (buffered, oldest first).
CREATE TABLE signals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX signals_workflow ON signals (workflow_id, id);

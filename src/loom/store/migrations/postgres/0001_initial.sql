-- Workflows: one row each, the materialised view of the history plus scheduling columns.
-- ready_at: claimable when <= now (timer due, new work, or an expired lease); NULL = waits for
-- a signal or is finished. lease_epoch grows with every claim and fences stale writers.
-- Times are epoch seconds and payloads JSON text, exactly as in the SQLite schema; identifiers
-- use the "C" collation so they sort bytewise, whatever the database's locale.
CREATE TABLE workflows (
    id               TEXT COLLATE "C" PRIMARY KEY,
    name             TEXT COLLATE "C" NOT NULL,
    version          TEXT NOT NULL,
    status           TEXT NOT NULL,
    input            TEXT NOT NULL,
    state            TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    current_step     TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    last_seq         BIGINT NOT NULL,
    ready_at         DOUBLE PRECISION,
    lease_owner      TEXT,
    lease_epoch      BIGINT NOT NULL DEFAULT 0,
    cancel_requested TEXT
);
CREATE INDEX workflows_ready ON workflows (ready_at) WHERE ready_at IS NOT NULL;
CREATE INDEX workflows_status_created ON workflows (status, created_at);
CREATE INDEX workflows_created ON workflows (created_at);
CREATE INDEX workflows_name_created ON workflows (name, created_at);

-- The append-only history. The primary key makes a duplicate sequence number impossible.
CREATE TABLE events (
    workflow_id TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workflow_id, seq)
);

-- Signals sent but not yet consumed by a wait_for_signal (buffered, oldest first).
CREATE TABLE signals (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX signals_workflow ON signals (workflow_id, id);

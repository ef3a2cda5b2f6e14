-- Continue-as-new: each workflow id holds a chain of runs. The row and the events table hold
-- the current run; the histories of earlier runs are kept in run_events.
ALTER TABLE workflows ADD COLUMN run_id TEXT;
UPDATE workflows SET run_id = lower(hex(randomblob(16))) WHERE run_id IS NULL;
CREATE TABLE run_events (
    workflow_id TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (workflow_id, run_id, seq)
) WITHOUT ROWID;

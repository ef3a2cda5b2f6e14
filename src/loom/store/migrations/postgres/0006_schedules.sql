-- Schedules: one row each. The definition (the workflow to start, its input, a cron expression
-- in a timezone or an interval in seconds, the overlap and catch-up policies) and the progress:
-- next_at is the next slot (due when <= now, unless paused), buffered_at a slot held until the
-- last run ends (overlap buffer_one), last_run_id the workflow of the last run started, whose
-- status the overlap policy reads. A run's workflow id is schedule:<name>:<slot>, so a slot
-- starts at most one run. Times are epoch seconds, the input JSON text.
CREATE TABLE schedules (
    name           TEXT COLLATE "C" PRIMARY KEY,
    workflow_name  TEXT COLLATE "C" NOT NULL,
    cron           TEXT,
    every_seconds  BIGINT,
    timezone       TEXT NOT NULL,
    input          TEXT NOT NULL,
    overlap        TEXT NOT NULL,
    catch_up       TEXT NOT NULL,
    catch_up_limit INTEGER NOT NULL,
    paused         INTEGER NOT NULL DEFAULT 0,
    next_at        DOUBLE PRECISION,
    buffered_at    DOUBLE PRECISION,
    last_slot_at   DOUBLE PRECISION,
    last_run_id    TEXT,
    created_at     DOUBLE PRECISION NOT NULL,
    updated_at     DOUBLE PRECISION NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_at) WHERE paused = 0;

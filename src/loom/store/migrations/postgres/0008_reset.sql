-- Reset: a reset of a workflow that a worker holds waits here (the reset, as JSON) for that
-- worker's next write or lease renewal, or for the next claim should the worker die.
ALTER TABLE workflows ADD COLUMN reset_requested TEXT;

-- Child workflows: the parent that started a workflow, and what becomes of the child when the
-- parent ends while it runs ('cancel' or 'abandon').
ALTER TABLE workflows ADD COLUMN parent_id TEXT;
ALTER TABLE workflows ADD COLUMN parent_close_policy TEXT;
CREATE INDEX workflows_parent ON workflows (parent_id, created_at) WHERE parent_id IS NOT NULL;

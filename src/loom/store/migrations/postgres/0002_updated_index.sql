-- The dashboard's stream of changes reads workflows in the order they were last updated.
CREATE INDEX workflows_updated ON workflows (updated_at, id);

-- Tags: indexed string pairs given at start (start_workflow(..., tags={"customer": "c-42"})),
-- so list filters find a workflow among millions without a scan.
CREATE TABLE workflow_tags (
    workflow_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (key, value, workflow_id)
);
CREATE INDEX workflow_tags_workflow ON workflow_tags (workflow_id);

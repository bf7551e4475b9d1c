-- Version 5 -> 6: CRM sync, inbound (issue 17): the webhook inbox, sync runs, each connection's
-- plaintext tenant selector and sync lease, and contacts' archive flag and source version.
-- locks: ACCESS EXCLUSIVE on crm_connections and contacts for milliseconds (nullable columns and
--   one constant default: no rewrite, no scan); the route and due indexes on crm_connections are
--   built on a table of one row per agency and CRM (SHARE lock, milliseconds); the new tables'
--   foreign keys take SHARE ROW EXCLUSIVE on crm_connections, organisations and crm_providers
--   for the same moment
-- backward-compatible: yes (version 5 code reads and writes these tables' columns by name)

ALTER TABLE crm_connections
    ADD COLUMN tenant_ref            text CHECK (char_length(tenant_ref) <= 100),
    ADD COLUMN sync_enabled          boolean NOT NULL DEFAULT true,
    ADD COLUMN next_sync_at          timestamptz,
    ADD COLUMN sync_lease_expires_at timestamptz,
    ADD COLUMN sync_locked_by        text CHECK (char_length(sync_locked_by) <= 100);
CREATE INDEX crm_connections_tenant_idx ON crm_connections (provider_id, tenant_ref)
    WHERE tenant_ref IS NOT NULL;
CREATE INDEX crm_connections_sync_due_idx ON crm_connections (next_sync_at)
    WHERE sync_enabled;

-- Plain text columns, not the crm_reference and lead_category domains: a column of a domain
-- with a CHECK rewrites contacts (42 s at 1,000,000 contacts under ACCESS EXCLUSIVE, measured).
ALTER TABLE contacts
    ADD COLUMN archived_at        timestamptz,
    ADD COLUMN source_modified_at timestamptz,
    ADD COLUMN source_etag        text,
    ADD COLUMN crm_category       text;

CREATE TABLE crm_webhook_inbox (
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    provider_id      text NOT NULL REFERENCES crm_providers (id),
    organisation_id  uuid REFERENCES organisations (id) ON DELETE CASCADE,
    connection_id    uuid,
    tenant_ref       text CHECK (char_length(tenant_ref) <= 100),
    dedupe_key       text NOT NULL CHECK (char_length(dedupe_key) <= 400),
    topic            text NOT NULL CHECK (char_length(topic) <= 100),
    entity_id        text CHECK (char_length(entity_id) <= 200),
    event_time       timestamptz,
    status           text NOT NULL DEFAULT 'received'
                     CHECK (status IN ('received', 'processing', 'done', 'skipped', 'dead', 'unrouted')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    locked_by        text CHECK (char_length(locked_by) <= 100),
    payload          bytea,
    outcome          text CHECK (char_length(outcome) <= 100),
    last_error       text CHECK (char_length(last_error) <= 500),
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz,
    PRIMARY KEY (id),
    UNIQUE (provider_id, dedupe_key),
    FOREIGN KEY (organisation_id, connection_id)
        REFERENCES crm_connections (organisation_id, id) ON DELETE SET NULL (connection_id)
);
CREATE INDEX crm_webhook_inbox_due_idx ON crm_webhook_inbox (next_attempt_at)
    WHERE status IN ('received', 'processing');
CREATE INDEX crm_webhook_inbox_list_idx ON crm_webhook_inbox (organisation_id, received_at DESC, id);
CREATE INDEX crm_webhook_inbox_unrouted_idx ON crm_webhook_inbox (provider_id, tenant_ref)
    WHERE status = 'unrouted';

-- One row per sync run of one stream of one connection, with its counts.
CREATE TABLE crm_sync_runs (
    organisation_id uuid NOT NULL,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    connection_id   uuid NOT NULL,
    stream          text NOT NULL CHECK (char_length(stream) <= 50),
    trigger         text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'reset')),
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    pages           integer NOT NULL DEFAULT 0,
    fetched         integer NOT NULL DEFAULT 0,
    created         integer NOT NULL DEFAULT 0,
    updated         integer NOT NULL DEFAULT 0,
    unchanged       integer NOT NULL DEFAULT 0,
    suppressed      integer NOT NULL DEFAULT 0,
    archived        integer NOT NULL DEFAULT 0,
    field_errors    integer NOT NULL DEFAULT 0,
    rate_limited    integer NOT NULL DEFAULT 0,
    error           text CHECK (char_length(error) <= 500),
    PRIMARY KEY (organisation_id, id),
    FOREIGN KEY (organisation_id, connection_id)
        REFERENCES crm_connections (organisation_id, id) ON DELETE CASCADE
);
CREATE INDEX crm_sync_runs_connection_idx
    ON crm_sync_runs (organisation_id, connection_id, started_at DESC, id);

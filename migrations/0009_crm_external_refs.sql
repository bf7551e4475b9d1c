-- Version 8 -> 9: CRM role facts kept between runs (issue 17, point 1) and per-connection CRM
-- call limits shared by every process on the database (issue 17, point 2).
-- locks: SHARE ROW EXCLUSIVE on crm_connections (for the foreign key of crm_external_refs:
--   brief, no rewrite, no scan of an empty table); nothing else on existing tables
-- backward-compatible: yes (version 8 code never reads or writes the new tables)

-- One row per CRM record a connection has read that says something about people's roles
-- (a Reapit applicant, landlord, vendor, tenancy or offer; an agentOS record): the contacts it
-- relates to (their CRM ids), the records it concerns ("landlords/L1": a tenancy's landlord,
-- whose people's category it changes), its role facts (statuses, modes) as the provider module reads them,
-- and its version, so a person's category can be derived again from all their roles without
-- reading the CRM again. content_hash lets a full scan (agentOS) skip what has not changed.
CREATE TABLE crm_external_refs (
    organisation_id     uuid        NOT NULL,
    connection_id       uuid        NOT NULL,
    record_type         text        NOT NULL CHECK (char_length(record_type) BETWEEN 1 AND 40),
    external_id         text        NOT NULL CHECK (char_length(external_id) BETWEEN 1 AND 200),
    contact_ids         text[]      NOT NULL DEFAULT '{}',
    links               text[]      NOT NULL DEFAULT '{}',
    roles               jsonb       NOT NULL DEFAULT '{}',
    content_hash        bytea,
    archived            boolean     NOT NULL DEFAULT false,
    deleted_at          timestamptz,
    source_modified_at  timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_external_refs_pkey
        PRIMARY KEY (organisation_id, connection_id, record_type, external_id),
    CONSTRAINT crm_external_refs_connection_fkey FOREIGN KEY (organisation_id, connection_id)
        REFERENCES crm_connections (organisation_id, id) ON DELETE CASCADE
);
-- A person's roles: the records that name them, and the records that link to those.
CREATE INDEX crm_external_refs_contacts_idx ON crm_external_refs USING gin (contact_ids);
CREATE INDEX crm_external_refs_links_idx ON crm_external_refs USING gin (links);

-- The next moment a call of a connection (in one direction) may start, and its 429 pause, shared
-- by every sync and writeback process (integrations/limits.py): each call moves next_at on by
-- the connection's interval in one statement. No foreign keys: rows are tiny, rewritten per call,
-- and must not slow an erasure; UNLOGGED, as a crash that empties it forgets only spacing.
CREATE UNLOGGED TABLE crm_call_schedule (
    organisation_id uuid        NOT NULL,
    connection_id   uuid        NOT NULL,
    direction       text        NOT NULL CHECK (direction IN ('sync', 'writeback')),
    next_at         timestamptz NOT NULL,
    paused_until    timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT crm_call_schedule_pkey PRIMARY KEY (organisation_id, connection_id, direction)
);

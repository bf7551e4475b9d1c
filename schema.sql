-- NurtureHub schema: the whole schema of a new database, applied by `nurturehub db init`.
-- A database made at an older version is upgraded by the steps in migrations/ (`db migrate`).
-- Core PostgreSQL only (no extensions), so it runs on the embedded PostgreSQL 18 and on 15+.
-- Every tenant table carries organisation_id, and its keys and unique constraints include it,
-- so rows can never be joined across organisations and the schema can be distributed by tenant.
-- schema-version: 10

-- One row per version the database has been at: 'schema.sql' for the version it was created at,
-- then one per migration step (migrations/), with whether the previous version's code still works
-- after the step: a server of that version may start against the database only then.
CREATE TABLE schema_version (
    version             integer PRIMARY KEY,
    applied_at          timestamptz NOT NULL DEFAULT now(),
    name                text CHECK (char_length(name) <= 200),
    duration_ms         integer CHECK (duration_ms >= 0),
    backward_compatible boolean NOT NULL DEFAULT false
);

-- Tenancy and access ----------------------------------------------------------------------------

CREATE TABLE organisations (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email      text NOT NULL UNIQUE CHECK (char_length(email) BETWEEN 3 AND 320),
    name       text CHECK (char_length(name) <= 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    organisation_id uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

-- Only a SHA-256 of the token is kept: tokens carry 190 bits of randomness, so a fast hash is
-- enough, and the token itself is shown once. The role is read from the membership at each
-- check, so demoting a user takes effect on their existing tokens.
CREATE TABLE api_tokens (
    organisation_id uuid NOT NULL,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL,
    name            text CHECK (char_length(name) <= 200),
    token_hash      bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    expires_at      timestamptz,  -- refused from then on; null: until revoked
    PRIMARY KEY (organisation_id, id),
    UNIQUE (id),
    FOREIGN KEY (organisation_id, user_id)
        REFERENCES memberships (organisation_id, user_id) ON DELETE CASCADE
);

-- Contacts and their categories -----------------------------------------------------------------

-- Columns written on every contact write take their rules from domains rather than table CHECKs:
-- PostgreSQL reads a table's CHECK constraints back from text on every statement that writes the
-- table, while it compiles a domain's once per connection (bench/: a contact insert ran 1.05M
-- instructions with CHECKs, 0.54M with domains and the search function below).
CREATE DOMAIN lead_category AS text CHECK (VALUE IN (
    'seller', 'buyer', 'landlord', 'tenant_applicant', 'property_investor', 'btl_investor',
    'active_seller', 'active_buyer', 'managed_landlord', 'active_tenant',
    'active_property_investor', 'active_btl_investor'));
CREATE DOMAIN lead_group AS text CHECK (VALUE IN ('prospect', 'existing_client'));
CREATE DOMAIN consent_status AS text CHECK (VALUE IN ('granted', 'denied', 'unknown', 'pending'));
CREATE DOMAIN import_source AS text CHECK (VALUE IN ('crm_sync', 'manual', 'apify', 'land_registry'));
CREATE DOMAIN person_name AS text CHECK (char_length(VALUE) <= 200);
CREATE DOMAIN email_address AS text CHECK (char_length(VALUE) <= 320);     -- normalised
CREATE DOMAIN e164_phone AS text CHECK (VALUE ~ '^\+[1-9][0-9]{6,14}$');
CREATE DOMAIN uk_postcode AS text CHECK (char_length(VALUE) <= 8);         -- normalised, 'SW1A 1AA'
CREATE DOMAIN crm_reference AS text CHECK (char_length(VALUE) <= 200);     -- a CRM's own id
CREATE DOMAIN assignment_reason AS text CHECK (char_length(VALUE) <= 500);

-- The group each of the twelve categories belongs to, declared once: the assignments' generated
-- category_group and contacts.list's group filter both use it.
CREATE FUNCTION lead_category_group(category text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN CASE WHEN category IN ('active_seller', 'active_buyer', 'managed_landlord',
                                  'active_tenant', 'active_property_investor',
                                  'active_btl_investor')
                THEN 'existing_client' ELSE 'prospect' END;

-- What contacts.list's `search` matches: whole words and prefixes of the names, the email
-- (whole, local part, domain and the local part's pieces), the phone's digits in international
-- and national form, and the postcode (whole, outward and inward codes). In PL/pgSQL so that
-- PostgreSQL plans it once per connection: as a generated column's own expression it was read
-- back from text and planned again on every insert.
CREATE FUNCTION contact_search_vector(first_name text, last_name text, email text, phone text,
                                      postcode text) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN array_to_tsvector(
        array_remove(array_remove(
            regexp_split_to_array(lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')),
                                  '[^[:alnum:]]+')
            || ARRAY[lower(first_name), lower(last_name),
                     regexp_replace(lower(first_name), '[^[:alnum:]]+', '', 'g'),
                     regexp_replace(lower(last_name), '[^[:alnum:]]+', '', 'g'),
                     email, split_part(email, '@', 1), split_part(email, '@', 2),
                     substr(phone, 2),
                     CASE WHEN phone LIKE '+44%' THEN '0' || substr(phone, 4) END,
                     lower(replace(postcode, ' ', '')),
                     lower(split_part(postcode, ' ', 1)), lower(split_part(postcode, ' ', 2))]
            || regexp_split_to_array(split_part(email, '@', 1), '[^[:alnum:]]+'),
        NULL), ''));
END
$$;

CREATE TABLE crm_providers (
    id           text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_]{1,39}$'),
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    auth_type    text NOT NULL CHECK (auth_type IN ('api_key', 'oauth2')),
    webhook_path text NOT NULL UNIQUE CHECK (webhook_path ~ '^/[a-z0-9/_-]+$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Credentials are an AES-256-GCM envelope (key id, nonce, ciphertext+tag) whose associated data
-- binds it to this organisation, table, column and connection id.
CREATE TABLE crm_connections (
    organisation_id       uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    id                    uuid NOT NULL DEFAULT gen_random_uuid(),
    provider_id           text NOT NULL REFERENCES crm_providers (id),
    status                text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('active', 'paused', 'error', 'pending')),
    encrypted_credentials bytea NOT NULL,
    credentials_hint      text CHECK (char_length(credentials_hint) <= 16),
    settings              jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    sync_cursor           jsonb,
    last_error_message    text CHECK (char_length(last_error_message) <= 500),
    last_error_at         timestamptz,
    last_synced_at        timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- Inbound sync. tenant_ref is the agency's plaintext selector in its CRM (Reapit customer id,
    -- Alto AgencyRef): a webhook finds its connection by it, never by decrypting credentials.
    tenant_ref            text CHECK (char_length(tenant_ref) <= 100),
    sync_enabled          boolean NOT NULL DEFAULT true,
    next_sync_at          timestamptz,
    sync_lease_expires_at timestamptz,
    sync_locked_by        text CHECK (char_length(sync_locked_by) <= 100),
    PRIMARY KEY (organisation_id, id),
    UNIQUE (organisation_id, provider_id)
);
-- A webhook's route. Not unique: sandboxes (Reapit's SBOX) are shared, so an event whose
-- selector several organisations name is kept unrouted, never delivered to all of them.
CREATE INDEX crm_connections_tenant_idx ON crm_connections (provider_id, tenant_ref)
    WHERE tenant_ref IS NOT NULL;
-- The sync worker's claim: connections due for a poll.
CREATE INDEX crm_connections_sync_due_idx ON crm_connections (next_sync_at)
    WHERE sync_enabled;

CREATE TABLE contacts (
    organisation_id   uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    first_name        person_name,
    last_name         person_name,
    email             email_address,
    phone             e164_phone,
    postcode          uk_postcode,
    consent_status    consent_status NOT NULL DEFAULT 'unknown',
    consent_timestamp timestamptz,
    import_source     import_source NOT NULL DEFAULT 'manual',
    crm_connection_id uuid,
    external_id       crm_reference,
    crm_payload       jsonb,
    -- The active assignment's category, kept in the same transaction as the assignment rows so
    -- that list filters by category can walk one keyset index instead of joining history.
    active_category   lead_category,
    -- A GIN index answers prefix queries ('smi':*) without pg_trgm, which core PostgreSQL lacks.
    search_vector     tsvector NOT NULL GENERATED ALWAYS AS (
        contact_search_vector(first_name, last_name, email, phone, postcode)) STORED,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Inbound sync: archived in the CRM (reversible; contacts.list hides it unless asked), the
    -- CRM's version of the record last applied (an older one never overwrites it), and the
    -- category the CRM's roles last gave (an agent's own choice stands until that changes).
    -- Plain text, not the crm_reference and lead_category domains: adding a column of a domain
    -- with a CHECK rewrites the table (42 s at 1,000,000 contacts, bench.migrations); the apply
    -- path writes only a category of the twelve and a CRM's eTag.
    archived_at        timestamptz,
    source_modified_at timestamptz,
    source_etag        text,
    crm_category       text,
    PRIMARY KEY (organisation_id, id),
    -- No ON DELETE action: crm.disconnect detaches the contacts (docs/citus.md).
    FOREIGN KEY (organisation_id, crm_connection_id)
        REFERENCES crm_connections (organisation_id, id),
    CHECK (crm_payload IS NULL OR import_source = 'crm_sync')
);
CREATE UNIQUE INDEX contacts_email_key ON contacts (organisation_id, email) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX contacts_external_key ON contacts (organisation_id, crm_connection_id, external_id)
    WHERE external_id IS NOT NULL;
-- Keyset pagination, newest first, for the unfiltered list and for each equality filter; a
-- filter on several categories (or a group) walks this index once per category and merges.
CREATE INDEX contacts_created_idx ON contacts (organisation_id, created_at DESC, id DESC);
CREATE INDEX contacts_category_idx ON contacts (organisation_id, active_category, created_at DESC, id DESC);
CREATE INDEX contacts_consent_idx ON contacts (organisation_id, consent_status, created_at DESC, id DESC);
CREATE INDEX contacts_source_idx ON contacts (organisation_id, import_source, created_at DESC, id DESC);
CREATE INDEX contacts_search_idx ON contacts USING gin (search_vector);

CREATE TABLE lead_category_assignments (
    organisation_id uuid NOT NULL,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    contact_id      uuid NOT NULL,
    category        lead_category NOT NULL,
    -- The group follows from the category, so the database derives it rather than trusting callers.
    category_group  lead_group NOT NULL GENERATED ALWAYS AS (lead_category_group(category)) STORED,
    assigned_at     timestamptz NOT NULL DEFAULT now(),
    superseded_at   timestamptz,
    assigned_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    reason          assignment_reason,
    PRIMARY KEY (organisation_id, id),
    FOREIGN KEY (organisation_id, contact_id)
        REFERENCES contacts (organisation_id, id) ON DELETE CASCADE,
    CHECK (superseded_at IS NULL OR superseded_at >= assigned_at)
);
-- Exactly one active assignment per categorised contact.
CREATE UNIQUE INDEX lead_category_assignments_active_key
    ON lead_category_assignments (organisation_id, contact_id) WHERE superseded_at IS NULL;
CREATE INDEX lead_category_assignments_history_idx
    ON lead_category_assignments (organisation_id, contact_id, assigned_at DESC);

-- The evidence of consent: every change of a contact's consent, overall or on one channel (email,
-- SMS, phone, post, as the CRMs hold them), with the time of consent its source gave, how it
-- reached us and who or what made it. A channel's consent is its latest row here (none: never
-- asked); the overall one is also contacts.consent_status, which lists filter on. Erased with
-- the contact.
CREATE TABLE contact_consent_events (
    organisation_id   uuid NOT NULL,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    contact_id        uuid NOT NULL,
    channel           text NOT NULL CHECK (channel IN ('overall', 'email', 'sms', 'phone', 'post')),
    status            consent_status NOT NULL,
    consented_at      timestamptz,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    source            text NOT NULL CHECK (source IN ('manual', 'import', 'crm_sync', 'api')),
    actor_user_id     uuid,
    actor_token_id    uuid,
    crm_connection_id uuid,
    request_id        text CHECK (char_length(request_id) <= 100),
    PRIMARY KEY (organisation_id, id),
    FOREIGN KEY (organisation_id, contact_id)
        REFERENCES contacts (organisation_id, id) ON DELETE CASCADE
);
CREATE INDEX contact_consent_events_contact_idx
    ON contact_consent_events (organisation_id, contact_id, recorded_at DESC);

-- A category change: take the contact's row lock, then, unless the contact already has this
-- category, end the active assignment, set the contact's category and insert the new assignment,
-- at one timestamp. The change is a query of its own after the lock: a VOLATILE function takes
-- a fresh snapshot for each query, so it sees every change committed before the lock was
-- granted, and the history has no gaps and never two active rows. The insert reads
-- `superseded`, so the old row leaves the partial unique index first. Returns the new assignment
-- (changed) or, when nothing changed, the active one; no row for a contact that does not exist.
-- A function so that the lock and the change are one statement: one round trip, and on its own
-- a transaction without BEGIN and COMMIT (bench/: 20% less PostgreSQL CPU per assign than the
-- same two statements pipelined between BEGIN and COMMIT).
CREATE FUNCTION set_contact_category(p_organisation_id uuid, p_contact_id uuid, p_category text,
                                     p_assigned_by uuid, p_reason text)
    RETURNS TABLE (changed boolean, id uuid, category text, "group" text,
                   assigned_at timestamptz, superseded_at timestamptz, assigned_by uuid,
                   reason text)
    LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM FROM contacts AS c
      WHERE c.organisation_id = p_organisation_id AND c.id = p_contact_id
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH target AS MATERIALIZED (
            SELECT clock_timestamp() AS at FROM contacts AS c
             WHERE c.organisation_id = p_organisation_id AND c.id = p_contact_id
               AND c.active_category IS DISTINCT FROM p_category),
         superseded AS (
            UPDATE lead_category_assignments AS s SET superseded_at = (SELECT at FROM target)
             WHERE s.organisation_id = p_organisation_id AND s.contact_id = p_contact_id
               AND s.superseded_at IS NULL AND EXISTS (SELECT FROM target)
            RETURNING 1),
         contact AS (
            UPDATE contacts AS c SET active_category = p_category,
                                     updated_at = (SELECT at FROM target)
             WHERE c.organisation_id = p_organisation_id AND c.id = p_contact_id
               AND EXISTS (SELECT FROM target)
            RETURNING c.updated_at AS at),
         inserted AS (
            INSERT INTO lead_category_assignments AS a
                        (organisation_id, contact_id, category, assigned_at, assigned_by, reason)
            SELECT p_organisation_id, p_contact_id, p_category, contact.at, p_assigned_by, p_reason
              FROM contact
             WHERE p_category IS NOT NULL AND (SELECT count(*) FROM superseded) >= 0
            RETURNING a.id, a.category, a.category_group, a.assigned_at, a.superseded_at,
                      a.assigned_by, a.reason)
    SELECT true, i.id, CAST(i.category AS text), CAST(i.category_group AS text), i.assigned_at,
           i.superseded_at, i.assigned_by, CAST(i.reason AS text)
      FROM inserted AS i
    UNION ALL
    SELECT false, a.id, a.category, a.category_group, a.assigned_at, a.superseded_at,
           a.assigned_by, a.reason
      FROM lead_category_assignments AS a
     WHERE NOT EXISTS (SELECT FROM target)
       AND a.organisation_id = p_organisation_id AND a.contact_id = p_contact_id
       AND a.superseded_at IS NULL;
END
$$;

-- GDPR erasure: keyed hashes (HMAC-SHA256) of an erased person's identifiers, never the values,
-- so that a later import of the same person is refused until an admin lifts it.
CREATE TABLE erasure_suppressions (
    organisation_id uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    identifier_hash bytea NOT NULL CHECK (octet_length(identifier_hash) = 32),
    kind            text NOT NULL CHECK (kind IN ('email', 'phone', 'external_id')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    PRIMARY KEY (organisation_id, identifier_hash)
);

-- Each lifted suppression, as evidence of why a person erased at their request may be held
-- again: which identifier (its keyed hash, never the value), when it was suppressed, who lifted
-- it, when and why (the reason is the admin's words: procedures ask for no personal data in it).
CREATE TABLE erasure_suppression_lifts (
    organisation_id uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    identifier_hash bytea NOT NULL CHECK (octet_length(identifier_hash) = 32),
    kind            text NOT NULL CHECK (kind IN ('email', 'phone', 'external_id')),
    suppressed_at   timestamptz NOT NULL,
    lifted_at       timestamptz NOT NULL DEFAULT now(),
    lifted_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    reason          text NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 500),
    request_id      text CHECK (char_length(request_id) <= 100),
    PRIMARY KEY (organisation_id, id)
);
CREATE INDEX erasure_suppression_lifts_hash_idx
    ON erasure_suppression_lifts (organisation_id, identifier_hash);

-- CRM writeback -----------------------------------------------------------------------------------

-- One row per (event, connection). Delivered by `nurturehub worker`: a worker claims due rows with
-- FOR UPDATE SKIP LOCKED and holds them under a lease; a row whose lease ran out (a killed worker)
-- is claimed again. Disconnecting a CRM cancels its queued rows: they become failed with the
-- reason in last_error and connection_id null, kept so admins can see what was not delivered (the
-- four statuses of the release notes stay four). Erasing a contact deletes its rows.
CREATE TABLE crm_writeback_queue (
    organisation_id  uuid NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    -- Enqueue order: events of one contact are delivered in this order, and lists page by it.
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    connection_id    uuid,
    provider_id      text NOT NULL REFERENCES crm_providers (id),
    contact_id       uuid NOT NULL,
    event_type       text NOT NULL CHECK (event_type IN (
        'email_sent', 'email_opened', 'email_clicked', 'lead_score_update',
        'journey_completed', 'hot_alert_fired')),
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(payload) = 'object'),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'success', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL DEFAULT 8 CHECK (max_attempts BETWEEN 1 AND 100),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    locked_by        text CHECK (char_length(locked_by) <= 100),
    last_error       text CHECK (char_length(last_error) <= 500),
    idempotency_key  text CHECK (char_length(idempotency_key) <= 200),
    external_id      text CHECK (char_length(external_id) <= 200),  -- the CRM's id for the entry
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    PRIMARY KEY (organisation_id, id),
    -- No ON DELETE action: crm.disconnect detaches the events itself, as Citus refuses SET NULL
    -- on a key that holds organisation_id (docs/citus.md).
    FOREIGN KEY (organisation_id, connection_id)
        REFERENCES crm_connections (organisation_id, id),
    FOREIGN KEY (organisation_id, contact_id)
        REFERENCES contacts (organisation_id, id) ON DELETE CASCADE,
    CHECK ((status = 'processing') = (lease_expires_at IS NOT NULL)),
    CHECK (connection_id IS NOT NULL OR status IN ('success', 'failed'))
);
CREATE UNIQUE INDEX crm_writeback_queue_idempotency_key
    ON crm_writeback_queue (organisation_id, connection_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The worker's claim scans due pending rows and expired leases.
CREATE INDEX crm_writeback_queue_due_idx ON crm_writeback_queue (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX crm_writeback_queue_lease_idx ON crm_writeback_queue (lease_expires_at)
    WHERE status = 'processing';
-- One in-flight event per (connection, contact): the claim looks for an older open row here.
CREATE INDEX crm_writeback_queue_contact_idx
    ON crm_writeback_queue (organisation_id, connection_id, contact_id, seq)
    WHERE status IN ('pending', 'processing');
CREATE INDEX crm_writeback_queue_list_idx ON crm_writeback_queue (organisation_id, seq DESC);

CREATE TABLE crm_writeback_attempts (
    organisation_id uuid NOT NULL,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    queue_id        uuid NOT NULL,
    attempt         integer NOT NULL CHECK (attempt >= 1),
    started_at      timestamptz NOT NULL DEFAULT now(),
    duration_ms     integer NOT NULL CHECK (duration_ms >= 0),
    status_code     integer,
    outcome         text NOT NULL CHECK (outcome IN ('success', 'retry', 'failed', 'auth_error')),
    error           text CHECK (char_length(error) <= 500),   -- redacted before it is stored
    PRIMARY KEY (organisation_id, id),
    FOREIGN KEY (organisation_id, queue_id)
        REFERENCES crm_writeback_queue (organisation_id, id) ON DELETE CASCADE
);
CREATE INDEX crm_writeback_attempts_queue_idx ON crm_writeback_attempts (organisation_id, queue_id, attempt);

-- CRM sync (inbound) ------------------------------------------------------------------------------

-- Webhook inbox: each verified delivery, stored before the CRM is answered, then applied by
-- `nurturehub sync`. The payload is an AES-256-GCM envelope (bound to this table, column and row)
-- and is nulled once processed, so a person's data does not outlive its processing here. An
-- event for no known connection is kept as unrouted (organisation null) so it can be replayed.
-- dedupe_key is the provider's event identity (Reapit: event id, topic and entity, as one
-- change is sent once per role under one event id). No foreign key to crm_connections: on Citus
-- this table stays on the coordinator (docs/citus.md); crm.disconnect detaches its events.
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
    UNIQUE (provider_id, dedupe_key)
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

-- Audit -------------------------------------------------------------------------------------------

-- One row per mutation, written in the mutation's transaction. Names of changed fields only,
-- never their values. Append-only: a trigger refuses updates and deletes.
CREATE TABLE audit_log (
    organisation_id uuid NOT NULL REFERENCES organisations (id),
    id              bigint GENERATED ALWAYS AS IDENTITY,
    actor_user_id   uuid,
    actor_token_id  uuid,
    action          text NOT NULL CHECK (char_length(action) <= 100),
    target_type     text CHECK (char_length(target_type) <= 50),
    target_id       text CHECK (char_length(target_id) <= 100),
    changed_fields  text[] NOT NULL DEFAULT '{}',
    request_id      text CHECK (char_length(request_id) <= 100),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organisation_id, id)
);
CREATE INDEX audit_log_org_idx ON audit_log (organisation_id, created_at DESC);
CREATE INDEX audit_log_target_idx ON audit_log (organisation_id, target_type, target_id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Deployment ------------------------------------------------------------------------------------

-- Keys every server process of one deployment must share, made once by whichever starts first
-- (today: the key that signs list cursors when no NURTUREHUB_SUPPRESSION_KEY is set). Never the
-- suppression key itself: that one stays out of the database it protects.
CREATE TABLE server_keys (
    name       text PRIMARY KEY CHECK (char_length(name) <= 50),
    key        bytea NOT NULL CHECK (octet_length(key) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Rate limits --------------------------------------------------------------------------------------

-- Permits granted per organisation, scope and minute: each server process leases them in blocks
-- and spends them locally (server/ratelimit.py), so a call costs no round trip. `subject` is the
-- token's id for scope 'token', the organisation's own id for scope 'organisation'. Keyed by
-- organisation first, so the table distributes by tenant; no foreign keys, as a row lives for a
-- minute or two and must not slow an erasure or a revocation. UNLOGGED: its writes cost no WAL,
-- and a crash that empties it only forgets the current minute's counts.
CREATE UNLOGGED TABLE rate_limit_windows (
    organisation_id uuid        NOT NULL,
    scope           text        NOT NULL,
    subject         uuid        NOT NULL,
    window_start    timestamptz NOT NULL,
    granted         integer     NOT NULL,
    CONSTRAINT rate_limit_windows_pkey PRIMARY KEY (organisation_id, scope, subject, window_start),
    CONSTRAINT rate_limit_windows_scope_check CHECK (scope IN ('token', 'organisation')),
    CONSTRAINT rate_limit_windows_granted_check CHECK (granted >= 0)
);

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
    -- When a full scan (agentOS) last read the record: one missing from two complete scans in a
    -- row is gone from the CRM (offset paging can skip a live record once, not twice running).
    seen_at             timestamptz,
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

INSERT INTO schema_version (version, name) VALUES (10, 'schema.sql');

-- Version 4 -> 5: the history of every consent change, overall and per channel (email, SMS,
-- phone, post), as evidence; a channel's consent is its latest event.
-- locks: SHARE ROW EXCLUSIVE on contacts for milliseconds (the new table's foreign key; the new
--   table is empty, so nothing is scanned). contacts gains no column: a column of a domain type
--   with a CHECK rewrites the table (42 s at 1,000,000 contacts under ACCESS EXCLUSIVE, measured
--   by bench.migrations), so per-channel consent lives in this table alone
-- backward-compatible: yes (a new table; version 4 code never reads it)

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

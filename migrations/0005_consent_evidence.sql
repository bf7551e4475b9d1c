-- Version 4 -> 5: consent per channel on contacts, and the history of every consent change.
-- locks: ACCESS EXCLUSIVE on contacts for milliseconds (nullable columns without a default
--   rewrite and scan nothing); the new table's foreign key takes SHARE ROW EXCLUSIVE on contacts
--   for the same moment
-- backward-compatible: yes (version 4 code reads contacts' columns by name and writes named ones)

ALTER TABLE contacts
    ADD COLUMN consent_email consent_status,
    ADD COLUMN consent_sms   consent_status,
    ADD COLUMN consent_phone consent_status,
    ADD COLUMN consent_post  consent_status;

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

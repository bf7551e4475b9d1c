-- Version 3 -> 4: evidence of lifted erasure suppressions (contacts.liftSuppression and the
-- override on contacts.create / contacts.update).
-- locks: none on existing tables beyond a SHARE ROW EXCLUSIVE on organisations and users for the
--   new foreign keys (milliseconds: the table is new and empty)
-- backward-compatible: yes (a new table; version 3 code never reads it)

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

-- Version 6 -> 7: the schema distributable by organisation (Citus, docs/citus.md), tokens that
-- expire, and a table for the keys every server process of a deployment shares.
-- locks: ACCESS EXCLUSIVE on audit_log while its rows are checked for an organisation and its new
--   key is built (its rows are read twice: 0.4 s at 1,000,000 rows, bench.migrations); ACCESS
--   EXCLUSIVE on contacts, crm_writeback_queue and crm_connections while their foreign keys are
--   replaced and checked (one anti-join each over rows that name a connection); api_tokens gains
--   a nullable column without a default (no rewrite); server_keys is new
-- backward-compatible: yes (version 6 code reads and writes the same columns; its crm.disconnect
--   still deletes a connection, as the step's foreign keys refuse only a connection still named)

-- Every audit row belongs to an organisation (no procedure without a caller writes one), so the
-- key can lead with it, as every tenant table's does.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM audit_log WHERE organisation_id IS NULL) THEN
        RAISE EXCEPTION 'audit_log holds rows without an organisation; nothing was changed'
            USING HINT = 'report them before upgrading: every audit row must name its organisation';
    END IF;
END
$$;
ALTER TABLE audit_log ALTER COLUMN organisation_id SET NOT NULL;
ALTER TABLE audit_log DROP CONSTRAINT audit_log_pkey;
ALTER TABLE audit_log ADD PRIMARY KEY (organisation_id, id);

-- Citus refuses ON DELETE SET NULL on a foreign key that holds organisation_id: crm.disconnect
-- now detaches contacts, events and inbox rows before it deletes the connection.
ALTER TABLE crm_writeback_queue DROP CONSTRAINT crm_writeback_queue_organisation_id_connection_id_fkey;
ALTER TABLE crm_writeback_queue ADD FOREIGN KEY (organisation_id, connection_id)
    REFERENCES crm_connections (organisation_id, id);
ALTER TABLE crm_webhook_inbox DROP CONSTRAINT crm_webhook_inbox_organisation_id_connection_id_fkey;

ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;

CREATE TABLE server_keys (
    name       text PRIMARY KEY CHECK (char_length(name) <= 50),
    key        bytea NOT NULL CHECK (octet_length(key) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Last, as its lock is held to the commit: contacts' reads wait only for this check, one scan of
-- the contacts that name a connection.
ALTER TABLE contacts DROP CONSTRAINT contacts_organisation_id_crm_connection_id_fkey;
ALTER TABLE contacts ADD FOREIGN KEY (organisation_id, crm_connection_id)
    REFERENCES crm_connections (organisation_id, id);

-- Version 9 -> 10: when a full scan last saw each CRM record (issue 17, point 3: a record an
-- agentOS scan no longer finds is gone from the CRM, and archives its contact).
-- locks: ACCESS EXCLUSIVE on crm_external_refs for a catalog-only change (a nullable column
--   with no default: no rewrite, no scan); nothing else
-- backward-compatible: yes (version 9 code never reads the column; its inserts leave it null)

ALTER TABLE crm_external_refs ADD COLUMN seen_at timestamptz;

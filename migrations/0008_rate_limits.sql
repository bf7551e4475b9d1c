-- Version 7 -> 8: rate limits (issue 20, point 1): the permits server processes lease per
-- organisation, token and minute.
-- locks: none on existing tables (one new table, no foreign keys)
-- backward-compatible: yes (version 7 code never reads or writes the new table)

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

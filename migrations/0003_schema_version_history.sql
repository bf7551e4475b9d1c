-- Version 2 -> 3: schema_version records each step's file, how long it took, and whether the
-- previous version's code still works after it (a server of that version may then start).
-- locks: ACCESS EXCLUSIVE on schema_version, milliseconds (new columns with constant defaults
--        rewrite nothing); no lock on any other table
-- backward-compatible: yes (version 2 code reads schema_version's version column only)

ALTER TABLE schema_version
    ADD COLUMN name                text CHECK (char_length(name) <= 200),
    ADD COLUMN duration_ms         integer CHECK (duration_ms >= 0),
    ADD COLUMN backward_compatible boolean NOT NULL DEFAULT false;

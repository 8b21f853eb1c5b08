-- Removes pgfanout from the primary: the capture triggers of every table, the DDL event
-- trigger, the logical capture's slot and publication (tables get back the replica
-- identity they had), then schema pgfanout with its outbox (pending changes are lost:
-- stop writing and let the publisher drain first if they matter). Safe to run when not
-- installed.
--
--   psql -v ON_ERROR_STOP=1 -f sql/uninstall.sql

BEGIN;

DO $$
DECLARE
    t record;
    s record;
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'pgfanout_ddl') THEN
        DROP EVENT TRIGGER pgfanout_ddl;
    END IF;
    IF to_regnamespace('pgfanout') IS NULL THEN
        RETURN;
    END IF;
    -- The logical capture's slot: a forgotten slot keeps WAL until the disk is full. One
    -- a publisher streams from is refused (stop the publisher first), not cut off.
    IF to_regclass('pgfanout.capture') IS NOT NULL THEN
        FOR s IN SELECT r.slot_name, r.active_pid FROM pg_replication_slots r, pgfanout.capture c
                 WHERE r.slot_name IN (c.slot_name, 'pgfanout_' || substr(c.slot_token, 1, 16)) LOOP
            IF s.active_pid IS NOT NULL THEN
                RAISE EXCEPTION 'pgfanout: replication slot % is in use by process % (the publisher)', s.slot_name, s.active_pid
                    USING HINT = 'Stop the publisher, then run uninstall.sql again.';
            END IF;
            PERFORM pg_drop_replication_slot(s.slot_name);
        END LOOP;
        PERFORM pgfanout.unpublish_table(k.relid, k.prior_identity)
        FROM pgfanout.tracked k WHERE to_regclass(k.relid::oid::regclass::text) IS NOT NULL;
        IF EXISTS (SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                   WHERE p.pubname = 'pgfanout' AND pr.prrelid = 'pgfanout.capture'::regclass) THEN
            DROP PUBLICATION pgfanout;
        END IF;
    END IF;
    -- Every trigger that calls a pgfanout function, tracked or not (clones on partitions
    -- go with their parent's trigger).
    FOR t IN
        SELECT tg.tgname, tg.tgrelid::regclass AS rel
        FROM pg_catalog.pg_trigger tg JOIN pg_catalog.pg_proc p ON p.oid = tg.tgfoid
        WHERE p.pronamespace = 'pgfanout'::regnamespace AND tg.tgparentid = 0
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
    END LOOP;
END
$$;

DROP SCHEMA IF EXISTS pgfanout CASCADE;

COMMIT;

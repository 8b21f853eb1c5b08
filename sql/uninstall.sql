-- Removes pgfanout from the primary: the capture triggers of every table, the DDL event
-- trigger, then schema pgfanout with its outbox (pending changes are lost: stop writing
-- and let the publisher drain first if they matter). Safe to run when not installed.
--
--   psql -v ON_ERROR_STOP=1 -f sql/uninstall.sql

BEGIN;

DO $$
DECLARE
    t record;
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'pgfanout_ddl') THEN
        DROP EVENT TRIGGER pgfanout_ddl;
    END IF;
    IF to_regnamespace('pgfanout') IS NULL THEN
        RETURN;
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

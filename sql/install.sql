-- pgfanout capture layer: outbox table, capture triggers, track()/untrack().
--
--   psql -v ON_ERROR_STOP=1 -f sql/install.sql      (idempotent; run it again to upgrade)
--
-- Re-running keeps every pending outbox row and every tracked table: tables are only
-- created when missing, functions are replaced in place (the triggers pick up the new
-- bodies at once). The whole file is one transaction.
--
-- How a change is captured (bench/capture_cost.md has the measurements behind it):
--   INSERT    statement-level AFTER trigger with a transition table: one INSERT ... SELECT
--             writes every row of the statement, in the order the rows came.
--   UPDATE    row-level AFTER trigger, so that a primary-key change is paired with the
--             right old key.
--   DELETE    row-level AFTER trigger. A statement-level one would be cheaper for big
--             deletes but is not safe: in a query with data-modifying CTEs, e.g.
--             WITH d AS (DELETE FROM t RETURNING *) INSERT INTO t SELECT ... FROM d LIMIT 1,
--             the DELETE node can finish after the INSERT node, and its statement trigger
--             would then record "DELETE k" after "INSERT k" although the delete came first.
--             An INSERT has no such problem: nothing else in the same query can touch a row
--             the query inserted.
--   TRUNCATE  statement-level AFTER trigger, one TRUNCATE change. A partitioned table
--             also has a BEFORE TRUNCATE trigger, and so has each of its leaf partitions
--             (statement triggers are not cloned, so track() and the DDL event trigger
--             put them there): TRUNCATE of a partition or sub-partition is captured as
--             one DELETE per row it removes, under the partitioned table's name, like a
--             DELETE of those rows; TRUNCATE of the partitioned table as one TRUNCATE
--             change only (see pgfanout.capture_partition_truncate). In logical mode
--             these triggers stay, and write pgfanout.partition_truncates instead.
-- Partitioned tables and tables in a (non-partition) inheritance tree use row-level
-- triggers for INSERT and DELETE too: statement triggers fire only for the table named in
-- the statement, so a write addressed to a partition would be missed, while row triggers
-- of a partitioned table are cloned onto every partition, present and future. Their
-- changes carry the partitioned table's name; a row that moves to another partition is
-- captured as DELETE + INSERT.
--
-- Ordering. Changes get their ids when the trigger fires. For one row the id order is
-- the commit order, because writers of the same row are serialised by its lock (the
-- identity sequence must keep CACHE 1: cached ranges per session would break this). One
-- case needs care: a statement's AFTER triggers fire at its end, and a user's AFTER
-- trigger firing before ours may itself change rows of the same table (say an AFTER
-- INSERT trigger that updates the row it just inserted). That nested change is recorded
-- first although it happened last. So each capture notes, per table and per transaction,
-- the deepest trigger nesting level it ran at; a capture that finds a deeper capture of
-- its table has happened records, for each key it concerns, the row's state as it is now
-- (an upsert, or a DELETE if the row is gone) instead of the state its statement left.
-- State-based changes are always safe to apply in id order, so the replica converges.
-- A DEFERRABLE primary key is refused: with a deferred check, B can insert key k (lower
-- id) while A's delete of the old k is uncommitted, and B's commit then waits for A's.
--
-- DDL. An event trigger (installed when a superuser runs this file) keeps the triggers
-- of tracked tables in step with ALTER TABLE: a renamed key column, a new primary key, a
-- renamed table or schema, a new inheritance child, a new partition (created or attached
-- at any depth: it gets the TRUNCATE triggers; a detached one loses them). It refuses DDL
-- that would leave a tracked table uncapturable (dropping its primary key, attaching it as
-- a partition, disabling pgfanout's triggers or setting them to fire on replicas only,
-- SET UNLOGGED), and forgets dropped tables. Without it, run pgfanout.track() again after
-- such changes.
--
-- Not captured, like any DDL: the rows that ATTACH PARTITION brings into a tracked
-- partitioned table, or that DETACH / DROP of a single partition take out of it; and an
-- unlogged table emptied by crash recovery (track() warns about unlogged tables). Also
-- not captured: TRUNCATE of a foreign-table partition. TRUNCATE of a partition in a
-- REPEATABLE READ or SERIALIZABLE transaction is refused: its DELETEs would be read with
-- the transaction's snapshot and miss rows committed since (in READ COMMITTED they are
-- read after TRUNCATE's lock, so every row is seen).
--
-- Wake-up. pg_notify('pgfanout', '') is sent only while the publisher says it is idle
-- (pgfanout.publisher_state.idle, which the captures read through the sequence
-- pgfanout.publisher_idle, kept equal to it by a trigger): a NOTIFY at every commit costs about half of the
-- single-row write rate (a database-wide lock taken before commit and held until it
-- ends serialises committing writers), and a busy publisher drains in batches anyway and
-- polls as a fallback. Identical notifications within a transaction are folded into one
-- by PostgreSQL. The payload is empty; nothing depends on it. A writer that read idle = false just before the publisher went idle sends
-- nothing; the publisher must therefore drain once more after setting idle = true, and
-- its bounded fallback poll covers the rest.
--
-- Privileges (README "Security" has the whole model). The capture functions are SECURITY
-- INVOKER: they run as the role that wrote the row, so a cast to json or a domain check
-- that to_jsonb calls on a user's type runs with that role's rights, never the
-- installer's. Every role (PUBLIC) may therefore use schema pgfanout, read
-- publisher_state and tracked, and insert into the outbox (not its id or ts); row-level
-- security lets a role insert only changes of a table it may write (pgfanout_capture
-- below), and a TRUNCATE change only with TRUNCATE on that table. An ordinary table's
-- INSERTs go through a view of the outbox of its own that checks the same once per
-- statement (make_insert_capture). Reading and deleting
-- the outbox stays with the roles granted it (sql/roles.sql). The only functions that run
-- as the installer are the DDL event trigger and two look-ups of the outbox for the
-- partition-TRUNCATE capture; none of them touches a user's value.
-- Triggers are fired with session_replication_role = origin only (PostgreSQL's default
-- trigger mode), so a session that sets it to replica (superusers, and roles granted SET
-- on it) is not captured.

BEGIN;

-- Tells the DDL event trigger of an installed version to leave this file's DDL alone
-- (honoured only for the owner of schema pgfanout and superusers).
SET LOCAL pgfanout.installing = on;

-- Never adopt a schema pgfanout, or objects in it, that another role made first: their
-- owner could change them (a trigger on the outbox, a function body) and run code as
-- every writer or as the installer. Objects of a superuser are trusted when a superuser
-- installs.
DO $$
DECLARE
    me_super boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
    owner regrole;
    foreign_object text;
BEGIN
    SELECT nspowner::regrole INTO owner FROM pg_namespace WHERE nspname = 'pgfanout';
    IF owner IS NULL THEN
        RETURN;
    END IF;
    IF owner::oid <> current_user::regrole::oid
       AND NOT (me_super AND (SELECT rolsuper FROM pg_roles WHERE oid = owner)) THEN
        RAISE EXCEPTION 'pgfanout: schema pgfanout already exists and belongs to role %, not to %', owner, current_user
            USING DETAIL = 'install.sql does not take over a schema another role created: that role could change what pgfanout runs.',
                  HINT = format('Run install.sql as %s (SET ROLE), or drop or rename that schema if pgfanout did not make it.', owner);
    END IF;
    SELECT format('%s %s of role %s', kind, name, o::regrole) INTO foreign_object FROM (
        SELECT 'relation' AS kind, c.oid::regclass::text AS name, c.relowner AS o
        FROM pg_class c WHERE c.relnamespace = 'pgfanout'::regnamespace
        UNION ALL
        SELECT 'function', p.oid::regprocedure::text, p.proowner
        FROM pg_proc p WHERE p.pronamespace = 'pgfanout'::regnamespace
        UNION ALL
        SELECT 'type', t.oid::regtype::text, t.typowner
        FROM pg_type t WHERE t.typnamespace = 'pgfanout'::regnamespace
    ) x
    WHERE o <> owner::oid AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = o)
    LIMIT 1;
    IF foreign_object IS NOT NULL THEN
        RAISE EXCEPTION 'pgfanout: schema pgfanout holds %, which pgfanout''s owner % did not create', foreign_object, owner
            USING DETAIL = 'install.sql does not take over objects another role created: that role could change what pgfanout runs.',
                  HINT = 'Drop that object (or give it to the owner of schema pgfanout) and run install.sql again.';
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS pgfanout;
COMMENT ON SCHEMA pgfanout IS 'pgfanout: change capture for replication through RabbitMQ';

CREATE TABLE IF NOT EXISTS pgfanout.changes (
    id          bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    op          text NOT NULL,  -- INSERT, UPDATE, DELETE, TRUNCATE (no CHECK: PostgreSQL
                                -- prepares CHECK expressions at every statement, ~5 us each)
    new_row     jsonb,
    old_key     jsonb,
    ts          timestamptz NOT NULL DEFAULT clock_timestamp(),
    json_nulls  text[],     -- columns of new_row holding a JSON null (see JSON nulls below)
    new_text    jsonb,      -- text forms of columns of new_row (see Text forms below)
    old_text    jsonb,      -- the same for old_key
    new_json    json        -- the row when to_jsonb cannot hold it (then new_row is NULL)
);
COMMENT ON TABLE pgfanout.changes IS
    'Outbox: one row per captured change, written in the writer''s transaction, deleted by the publisher once the broker confirmed it.';

-- A queue table: every row is inserted once and deleted soon after. Vacuum it after a
-- fixed number of dead rows, not a fraction of a table size that swings from 0 to
-- millions, and let that vacuum run unthrottled. Rows are never updated, so the default
-- fillfactor (100) is right. The publisher also runs VACUUM on it after every 20,000
-- changes it deleted (autovacuum comes once per autovacuum_naptime at most).
ALTER TABLE pgfanout.changes SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0,
    toast.autovacuum_vacuum_scale_factor = 0,
    toast.autovacuum_vacuum_threshold = 2000,
    toast.autovacuum_vacuum_cost_delay = 0
);

CREATE TABLE IF NOT EXISTS pgfanout.tracked (
    relid       regclass PRIMARY KEY,
    schema_name text NOT NULL,
    table_name  text NOT NULL,
    key_columns text[] NOT NULL,
    tracked_at  timestamptz NOT NULL DEFAULT now(),
    json_columns text[] NOT NULL DEFAULT '{}',
    prior_identity text,   -- logical mode: the replica identity track() replaced with FULL
                           -- ('d', 'n', or the identity index's name)
    text_columns jsonb NOT NULL DEFAULT '{}'  -- see Text forms below
);

-- Upgrades of an install from before these columns: pending outbox rows get json_nulls
-- NULL; tracked tables get json_columns '{}', which makes those with json columns stale,
-- so the end of this file tracks them again with the probes.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'pgfanout.changes'::regclass
                   AND attname = 'json_nulls' AND NOT attisdropped) THEN
        ALTER TABLE pgfanout.changes ADD COLUMN json_nulls text[];
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'pgfanout.tracked'::regclass
                   AND attname = 'json_columns' AND NOT attisdropped) THEN
        ALTER TABLE pgfanout.tracked ADD COLUMN json_columns text[] NOT NULL DEFAULT '{}';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'pgfanout.tracked'::regclass
                   AND attname = 'prior_identity' AND NOT attisdropped) THEN
        ALTER TABLE pgfanout.tracked ADD COLUMN prior_identity text;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'pgfanout.changes'::regclass
                   AND attname = 'new_text' AND NOT attisdropped) THEN
        ALTER TABLE pgfanout.changes ADD COLUMN new_text jsonb, ADD COLUMN old_text jsonb, ADD COLUMN new_json json;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'pgfanout.tracked'::regclass
                   AND attname = 'text_columns' AND NOT attisdropped) THEN
        ALTER TABLE pgfanout.tracked ADD COLUMN text_columns jsonb NOT NULL DEFAULT '{}';
    END IF;
    IF to_regprocedure('pgfanout.capture_state(regclass, text, text, text, text[], jsonb)') IS NOT NULL THEN
        DROP FUNCTION pgfanout.capture_state(regclass, text, text, text, text[], jsonb);
    END IF;
    IF to_regprocedure('pgfanout.capture_row_change(oid, text, text, text, text[], jsonb, jsonb, text[])') IS NOT NULL THEN
        DROP FUNCTION pgfanout.capture_row_change(oid, text, text, text, text[], jsonb, jsonb, text[]);
    END IF;
    IF to_regprocedure('pgfanout.capture_row_change(oid, text, text, text, text[], jsonb, jsonb)') IS NOT NULL THEN
        DROP FUNCTION pgfanout.capture_row_change(oid, text, text, text, text[], jsonb, jsonb);
    END IF;
    IF to_regprocedure('pgfanout.json_nulls_of(jsonb, anyelement, text[])') IS NOT NULL THEN
        DROP FUNCTION pgfanout.json_nulls_of(jsonb, anyelement, text[]);
    END IF;
END
$$;
COMMENT ON TABLE pgfanout.tracked IS
    'One row per tracked table; names as PostgreSQL stores them, key_columns in primary-key order.';

CREATE TABLE IF NOT EXISTS pgfanout.publisher_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    idle      boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE pgfanout.publisher_state IS
    'Set by the publisher: idle = true while it waits for a notification, false while it drains.';
INSERT INTO pgfanout.publisher_state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- The idle flag as every capture reads it: 1 while publisher_state.idle is true, 0 while
-- it is false, kept so by the trigger below. Reading a sequence
-- (pg_sequence_last_value) is a plain function call that PL/pgSQL evaluates without
-- starting a query; reading the table took a query of its own, 1.7–4 us of every
-- capture. setval is not transactional: the flag turns as the publisher's UPDATE runs,
-- not at its commit, which changes nothing a writer can miss (see Wake-up above), and an
-- UPDATE rolled back leaves the flag turned until the publisher next sets it (it updates
-- the row also when the sequence disagrees with it; publisher/outbox_reader.cpp).
CREATE SEQUENCE IF NOT EXISTS pgfanout.publisher_idle AS integer MINVALUE 0 MAXVALUE 1 NO CYCLE;
COMMENT ON SEQUENCE pgfanout.publisher_idle IS
    'publisher_state.idle as the captures read it: last value 1 while idle, 0 while busy.';
DO $$
BEGIN
    PERFORM pg_catalog.setval('pgfanout.publisher_idle', CASE WHEN idle THEN 1 ELSE 0 END, true)
    FROM pgfanout.publisher_state;
END
$$;

CREATE OR REPLACE FUNCTION pgfanout.publisher_idle_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM setval('pgfanout.publisher_idle', CASE WHEN NEW.idle THEN 1 ELSE 0 END, true);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pgfanout.publisher_idle_changed() FROM PUBLIC;
CREATE OR REPLACE TRIGGER publisher_idle AFTER INSERT OR UPDATE OF idle ON pgfanout.publisher_state
    FOR EACH ROW EXECUTE FUNCTION pgfanout.publisher_idle_changed();

-- Leadership and fencing (README, "Leadership and fencing"). One publisher per database
-- ships: the one holding this lease, which names its PostgreSQL session (backend pid and
-- start time). The lease lapses when that session is no longer in pg_stat_activity, and a
-- standby then takes it with one short UPDATE (its row lock serialises contenders; no
-- transaction stays open, which would hold back vacuum of the outbox). An advisory lock
-- did this before, and any role that may connect could take it and stall every
-- publisher; this table is written only by roles granted UPDATE on it (sql/roles.sql:
-- the publisher), never by writers of tracked tables.
-- Each new holder takes a larger epoch, carried in every message it publishes
-- (x-pgfanout-epoch): listeners drop messages of an older epoch, which only a deposed
-- publisher still sends. The table is logged, so the epoch survives a failover to a
-- streaming standby; uninstall.sql drops it, and the next holder then starts from the
-- clock (microseconds since 1970), above every epoch taken before (see
-- publisher/outbox_reader.cpp, kTakeLeaseSql).
CREATE TABLE IF NOT EXISTS pgfanout.publisher_lease (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder_pid   integer,
    holder_start timestamptz,
    epoch        bigint NOT NULL DEFAULT 0,
    acquired_at  timestamptz
);
COMMENT ON TABLE pgfanout.publisher_lease IS
    'The active publisher: its session (pid, backend start) and its epoch; taken over by a standby once that session ends.';
REVOKE ALL ON pgfanout.publisher_lease FROM PUBLIC;
INSERT INTO pgfanout.publisher_lease DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Capture mode (README, "Capture modes"): 'trigger' (the triggers and the outbox above)
-- or 'logical' (the WAL, through the logical replication slot slot_name and the
-- publication pgfanout), switched by set_capture(). After a switch back to 'trigger',
-- slot_name stays set until the publisher has shipped what the slot still holds and
-- dropped it. slot_token makes the slot's name this install's own: a slot of that name
-- can only be one an earlier set_capture() made (the token is not readable by PUBLIC).
-- The table is in publication pgfanout, so that the publisher sees each switch at its
-- place in the WAL.
CREATE TABLE IF NOT EXISTS pgfanout.capture (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mode        text NOT NULL DEFAULT 'trigger',
    slot_name   name,
    slot_token  text NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text),
    switched_at timestamptz
);
COMMENT ON TABLE pgfanout.capture IS
    'The capture mode (trigger or logical) and the logical replication slot; changed by pgfanout.set_capture().';
INSERT INTO pgfanout.capture DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Where the publisher is in the slot (logical mode): the end LSN of the last transaction
-- it shipped completely, and the id it gave that transaction's last change. Ids of logical
-- changes count on from there, so a transaction decoded again after a restart gets the
-- same ids, and they stay above every outbox id (set_capture sets last_id when it
-- switches to logical, and the outbox's sequence above every logical id when it
-- switches back).
CREATE TABLE IF NOT EXISTS pgfanout.logical_position (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    lsn       pg_lsn NOT NULL DEFAULT '0/0',
    last_id   bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE pgfanout.logical_position IS
    'Logical capture: end LSN of the last transaction the publisher shipped, and the id of its last change.';
INSERT INTO pgfanout.logical_position DEFAULT VALUES ON CONFLICT DO NOTHING;
REVOKE ALL ON pgfanout.capture, pgfanout.logical_position FROM PUBLIC;

-- Logical mode: TRUNCATE of a partition of a tracked partitioned table. pgoutput, which
-- publishes partitions under their root's name, sends nothing for it, so the partition's
-- BEFORE TRUNCATE trigger writes here one row per row it removes (op DELETE, old_key its
-- primary key, rel the partition) and deletes them again at once: the slot carries the
-- inserts, in their place in the transaction, and the publisher ships each as a DELETE
-- of the root (root_schema.root_name), as the trigger capture does through the outbox.
-- A TRUNCATE of the root writes one row op TRUNCATE (rel the root), shipped as a
-- TRUNCATE of the root: what lets its partitions' triggers, fired by the same statement,
-- write nothing (see capture_partition_truncate). The publisher ignores every other
-- change of this table. Rows live for a statement at most, so the table stays empty.
CREATE TABLE IF NOT EXISTS pgfanout.partition_truncates (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    root_schema text NOT NULL,
    root_name   text NOT NULL,
    rel         regclass NOT NULL,
    op          text NOT NULL,
    old_key     jsonb,
    old_text    jsonb   -- text forms of the key (see Text forms below)
);
ALTER TABLE pgfanout.partition_truncates ADD COLUMN IF NOT EXISTS old_text jsonb;
COMMENT ON TABLE pgfanout.partition_truncates IS
    'Logical capture: the rows a TRUNCATE of a partition removes, each shipped from the slot as a DELETE of the partitioned table; deleted again in the same statement.';
ALTER TABLE pgfanout.partition_truncates SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);

-- The publication of logical mode. It exists from the install on, holding at least
-- pgfanout.capture and pgfanout.partition_truncates: pgoutput reads it with the catalog
-- as of each transaction it decodes, so it must exist before the slot does, or decoding
-- stops at the first transaction older than it. Tracked tables are added by set_capture('logical') (and
-- track() in that mode). Never one that another role made first (see the schema above).
DO $$
DECLARE
    owner oid;
BEGIN
    SELECT pubowner INTO owner FROM pg_publication WHERE pubname = 'pgfanout';
    IF owner IS NULL THEN
        -- With wal_level below logical PostgreSQL warns at once; the trigger mode does
        -- not need it, and set_capture('logical') says so clearly.
        PERFORM set_config('client_min_messages', 'error', true);
        CREATE PUBLICATION pgfanout FOR TABLE pgfanout.capture, pgfanout.partition_truncates
            WITH (publish_via_partition_root = true);
        PERFORM set_config('client_min_messages', 'notice', true);
    ELSIF owner <> current_user::regrole::oid
          AND NOT ((SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                   AND (SELECT rolsuper FROM pg_roles WHERE oid = owner)) THEN
        RAISE EXCEPTION 'pgfanout: publication pgfanout already exists and belongs to role %, not to %', owner::regrole, current_user
            USING DETAIL = 'install.sql does not take over a publication another role created: that role could change what the logical capture publishes.',
                  HINT = 'Drop that publication if pgfanout did not make it, or run install.sql as its owner.';
    ELSIF NOT EXISTS (SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                      WHERE p.pubname = 'pgfanout' AND pr.prrelid = 'pgfanout.capture'::regclass) THEN
        ALTER PUBLICATION pgfanout ADD TABLE pgfanout.capture;
    END IF;
    -- An install from before pgfanout.partition_truncates: its rows are written only by
    -- this file's capture_partition_truncate, so every transaction that writes one
    -- decodes with the table in the publication.
    IF NOT EXISTS (SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                   WHERE p.pubname = 'pgfanout' AND pr.prrelid = 'pgfanout.partition_truncates'::regclass) THEN
        ALTER PUBLICATION pgfanout ADD TABLE pgfanout.partition_truncates;
    END IF;
END
$$;

-- The primary-key columns of a table, in key order; NULL if it has no primary key.
CREATE OR REPLACE FUNCTION pgfanout.primary_key(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT array_agg(a.attname::text ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary
    HAVING count(*) > 0
$$;

-- Whether the primary key is DEFERRABLE. Such a key is refused: writers of the same key
-- are then no longer serialised before their changes are captured (see track()).
CREATE OR REPLACE FUNCTION pgfanout.primary_key_deferrable(rel regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = rel AND contype = 'p' AND condeferrable)
$$;

-- The key in the names of a table's own INSERT capture function and view (see
-- make_insert_capture): the md5 of its qualified name.
CREATE OR REPLACE FUNCTION pgfanout.insert_capture_key(schema_name text, table_name text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT md5(format('%I.%I', schema_name, table_name))
$$;

-- Which trigger function captures a table's rows (see the header).
CREATE OR REPLACE FUNCTION pgfanout.capture_function(rel regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN c.relkind = 'p' THEN 'pgfanout.capture_partition_row'
        WHEN EXISTS (SELECT FROM pg_inherits WHERE inhrelid = c.oid OR inhparent = c.oid)
            THEN 'pgfanout.capture_row'
        ELSE 'pgfanout.capture_insert_' || pgfanout.insert_capture_key(n.nspname, c.relname)
    END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel
$$;

CREATE OR REPLACE FUNCTION pgfanout.key_of(r jsonb, keys text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_object_agg(k, r -> k) FROM unnest(keys) AS k
$$;

-- Records that a capture of table rel runs at the current trigger nesting level, and
-- tells whether a capture of rel ran deeper earlier in this transaction (see the header).
-- Only called once some capture has run nested (pgfanout.nested is set), so plain
-- workloads never pay for it.
CREATE OR REPLACE FUNCTION pgfanout.nested_change(rel oid) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    depth integer := pg_trigger_depth();
    marker text := 'pgfanout.depth_' || rel;
    deepest integer := coalesce(nullif(current_setting(marker, true), ''), '0')::integer;
BEGIN
    IF depth > 1 AND depth > deepest THEN
        PERFORM set_config(marker, depth::text, true);
        PERFORM set_config('pgfanout.nested', 'on', true);
    END IF;
    RETURN deepest > depth;
END
$$;

-- JSON nulls. to_jsonb writes SQL NULL and a JSON null held in a json or jsonb column
-- alike ({"doc": null}), so each change also lists, in json_nulls, the columns of new_row
-- that hold a JSON null (NULL when there are none). Tables without such columns never pay
-- for it. For the others, track() passes after the key columns an empty argument and then
-- one probe per json/jsonb column, '{"doc": null}': a row that contains no probe has no
-- null there at all and takes the plain path; only a row whose json column is null (SQL or
-- JSON) is looked at again, column by column, with a dynamic statement.

-- The columns of rel whose type is json or jsonb (or a domain over them), in table order.
CREATE OR REPLACE FUNCTION pgfanout.json_columns(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE col(attname, attnum, typid) AS (
        SELECT a.attname, a.attnum, a.atttypid FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT col.attname, col.attnum, t.typbasetype FROM col JOIN pg_type t ON t.oid = col.typid
        WHERE t.typtype = 'd'
    )
    SELECT coalesce(array_agg(attname::text ORDER BY attnum), '{}')
    FROM col WHERE typid IN ('json'::regtype, 'jsonb'::regtype)
$$;

-- The column names of the probes '{"doc": null}' that track() passes to the triggers.
CREATE OR REPLACE FUNCTION pgfanout.probe_columns(probes jsonb[]) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT array_agg(k ORDER BY o) FROM unnest(probes) WITH ORDINALITY AS p(probe, o),
        LATERAL jsonb_object_keys(p.probe) AS k
$$;

-- A SQL expression giving the columns among cols of the row r (an alias or '($1)') that
-- hold a JSON null, or NULL when none does.
CREATE OR REPLACE FUNCTION pgfanout.json_nulls_sql(cols text[], r text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format('nullif(array_remove(ARRAY[%s]::text[], NULL), ''{}'')',
                  string_agg(format('CASE WHEN pg_catalog.json_typeof(%s.%I::pg_catalog.json) = ''null'' THEN %L END', r, c, c), ', '))
    FROM unnest(cols) AS c
$$;

-- For a row trigger, once its row r contained a probe (trigger arguments): the columns of
-- the probes that hold a JSON null in r.
CREATE OR REPLACE FUNCTION pgfanout.json_nulls_of(r anyelement, probe_args text[]) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result text[];
BEGIN
    EXECUTE 'SELECT ' || pgfanout.json_nulls_sql(pgfanout.probe_columns(probe_args::jsonb[]), '($1)')
        INTO result USING r;
    RETURN result;
END
$$;

-- The same for a row of rel that is an anonymous record (a row of a transition table),
-- whose columns only a cast back to rel's row type can name: through its text form, made
-- here, under this function's search_path, so that it reads back the same (a regclass
-- value prints with its schema only where the path does not reach it; the captures run
-- in the writer's path). Earlier versions took the text form; they are dropped below.
DROP FUNCTION IF EXISTS pgfanout.json_nulls_of_text(text, regclass, jsonb[]);
DROP FUNCTION IF EXISTS pgfanout.texts_of_text(text, regclass, jsonb);
DROP FUNCTION IF EXISTS pgfanout.key_jsonb_text(text, regclass, text[]);
CREATE OR REPLACE FUNCTION pgfanout.json_nulls_of_row(r record, rel regclass, probes jsonb[]) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result text[];
BEGIN
    EXECUTE 'SELECT ' || pgfanout.json_nulls_sql(pgfanout.probe_columns(probes), format('($1::%s)', rel))
        INTO result USING r::text;
    RETURN result;
END
$$;

-- Text forms. Some values' to_jsonb form does not read back as the same value: a type
-- whose to_jsonb calls a cast to json (hstore and PostGIS make objects their input
-- functions refuse), json (to_jsonb sorts its keys, drops duplicates and spaces), an array
-- with lower bounds other than 1 ('[0:1]={5,6}' becomes [5,6]), and anything holding
-- these. Such a column's value also travels in its text form, as its type's output
-- function writes it, in new_text (and, for key columns, old_text): an object of column
-- name to string, NULL when there is none. new_row keeps the to_jsonb form for other
-- consumers. Tables without such columns never pay for it: track() passes after the
-- probes (see JSON nulls) another empty argument and the table's text_columns:
--   {"always": [columns], "bounds": [columns], "json": true, "old": {the same for the key columns}}
-- ("json": some column holds json, whose to_jsonb can fail: see row_jsonb).
-- "always" columns get their text form in every row; "bounds" columns (arrays, or
-- something holding one) only where their text has the '[lower:upper]=' decoration,
-- which a row's own text form shows first: a row without ']={' in it is not looked at.

-- What a type needs: 'json' (it holds json: always, and to_jsonb can fail on it, see
-- row_jsonb), 'always', 'bounds' or NULL. Follows jsonb_categorize_type: domains
-- to their base type, true arrays (typsubscript array_subscript_handler) to their element,
-- composites to their attributes; a cast to json counts only on a type that is none of
-- these, with an OID of 16384 or more, and only as a function cast (pg_cast method 'f').
CREATE OR REPLACE FUNCTION pgfanout.type_text_need(typ oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE part(t, depth) AS (
        SELECT typ, 0
        UNION ALL
        SELECT x.sub, part.depth + 1
        FROM part JOIN pg_type ty ON ty.oid = part.t
        CROSS JOIN LATERAL (
            SELECT ty.typbasetype AS sub WHERE ty.typtype = 'd'
            UNION ALL
            SELECT ty.typelem WHERE ty.typelem <> 0 AND ty.typsubscript = 'array_subscript_handler'::regproc
            UNION ALL
            SELECT a.atttypid FROM pg_attribute a
            WHERE ty.typtype = 'c' AND a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped
        ) x
        WHERE part.depth < 100
    )
    SELECT CASE
        WHEN bool_or(ty.oid = 'json'::regtype) THEN 'json'
        WHEN bool_or(ty.oid >= 16384 AND ty.typtype NOT IN ('d', 'c')
                         AND NOT (ty.typelem <> 0 AND ty.typsubscript = 'array_subscript_handler'::regproc)
                         AND EXISTS (SELECT FROM pg_cast
                                     WHERE castsource = ty.oid AND casttarget = 'json'::regtype AND castmethod = 'f'))
            THEN 'always'
        WHEN bool_or(ty.typelem <> 0 AND ty.typsubscript = 'array_subscript_handler'::regproc) THEN 'bounds'
    END
    FROM part JOIN pg_type ty ON ty.oid = part.t
$$;

-- The text_columns argument of rel's triggers ('{}' when it has no such column).
CREATE OR REPLACE FUNCTION pgfanout.text_columns(rel regclass, keys text[]) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH col AS (
        SELECT a.attname::text AS name, a.attnum, pgfanout.type_text_need(a.atttypid) AS need
        FROM pg_attribute a
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
    ), spec AS (
        SELECT jsonb_strip_nulls(jsonb_build_object(
                   'always', (SELECT jsonb_agg(name ORDER BY attnum) FROM col WHERE need IN ('always', 'json')),
                   'bounds', (SELECT jsonb_agg(name ORDER BY attnum) FROM col WHERE need = 'bounds'),
                   'json', (SELECT true FROM col WHERE need = 'json' LIMIT 1))) AS all_cols,
               jsonb_strip_nulls(jsonb_build_object(
                   'always', (SELECT jsonb_agg(name ORDER BY attnum) FROM col WHERE need IN ('always', 'json') AND name = ANY (keys)),
                   'bounds', (SELECT jsonb_agg(name ORDER BY attnum) FROM col WHERE need = 'bounds' AND name = ANY (keys)))) AS key_cols
    )
    SELECT CASE WHEN key_cols = '{}' THEN all_cols ELSE all_cols || jsonb_build_object('old', key_cols) END
    FROM spec
$$;

-- A SQL expression giving the text forms of the row r (an alias or '($1)') for spec (see
-- above), or NULL when there is none. format('%s') calls the type's output function
-- (no cast); jsonb_build_object takes at most 50 pairs, so they come in groups.
CREATE OR REPLACE FUNCTION pgfanout.texts_sql(spec jsonb, r text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH col AS (
        SELECT c AS name, false AS bounds, o FROM jsonb_array_elements_text(coalesce(spec -> 'always', '[]')) WITH ORDINALITY AS a(c, o)
        UNION ALL
        SELECT c, true, o + 100000 FROM jsonb_array_elements_text(coalesce(spec -> 'bounds', '[]')) WITH ORDINALITY AS b(c, o)
    ), pair AS (
        SELECT (row_number() OVER (ORDER BY o) - 1) / 40 AS grp, o,
               format('%L, CASE WHEN pg_catalog.num_nulls(%s.%I) = 0 %s THEN pg_catalog.format(''%%s'', %s.%I) END',
                      name, r, name,
                      CASE WHEN bounds THEN format('AND pg_catalog.strpos(pg_catalog.format(''%%s'', %s.%I), '']={'') > 0', r, name) ELSE '' END,
                      r, name) AS p
        FROM col
    ), grp AS (
        SELECT grp, format('pg_catalog.jsonb_build_object(%s)', string_agg(p, ', ' ORDER BY o)) AS obj FROM pair GROUP BY grp
    )
    SELECT format('NULLIF(pg_catalog.jsonb_strip_nulls(%s), ''{}'')', string_agg(obj, ' || ' ORDER BY grp))
    FROM grp
$$;

-- The text forms of r, a row of a tracked table (or of rel given as its text form: a row
-- of a transition table is an anonymous record, whose columns only a cast back to rel's
-- row type can name).
CREATE OR REPLACE FUNCTION pgfanout.texts_of(r anyelement, spec jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result jsonb;
BEGIN
    EXECUTE 'SELECT ' || pgfanout.texts_sql(spec, '($1)') INTO result USING r;
    RETURN result;
END
$$;

CREATE OR REPLACE FUNCTION pgfanout.texts_of_row(r record, rel regclass, spec jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result jsonb;
BEGIN
    EXECUTE 'SELECT ' || pgfanout.texts_sql(spec, format('($1::%s)', rel)) INTO result USING r::text;
    RETURN result;
END
$$;

-- The key columns of r as jsonb, for a row whose to_jsonb fails (see row_jsonb below):
-- they alone, which never hold json.
CREATE OR REPLACE FUNCTION pgfanout.key_jsonb(r anyelement, keys text[]) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result jsonb;
BEGIN
    EXECUTE 'SELECT pg_catalog.jsonb_build_object('
            || (SELECT string_agg(format('%L, ($1).%I', k, k), ', ') FROM unnest(keys) AS k) || ')'
        INTO result USING r;
    RETURN result;
END
$$;

-- The same for a row of rel that is an anonymous record (see json_nulls_of_row).
CREATE OR REPLACE FUNCTION pgfanout.key_jsonb_row(r record, rel regclass, keys text[]) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result jsonb;
BEGIN
    EXECUTE 'SELECT pg_catalog.jsonb_build_object('
            || (SELECT string_agg(format('%L, ($1::%s).%I', k, rel, k), ', ') FROM unnest(keys) AS k) || ')'
        INTO result USING r::text;
    RETURN result;
END
$$;

-- to_jsonb of a row, or NULL where jsonb cannot hold it: a json value with \u0000 in it
-- (jsonb has no NUL character) or a number past numeric's range (1e131072), or a row
-- past jsonb's 256 MB. PostgreSQL accepts such a write, so the capture must too: the
-- change then carries the row as to_json writes it (new_json). Schema-qualified calls,
-- as the block runs with the writer's search_path.
CREATE OR REPLACE FUNCTION pgfanout.row_jsonb(r anyelement) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN pg_catalog.to_jsonb(r);
EXCEPTION WHEN program_limit_exceeded OR untranslatable_character OR numeric_value_out_of_range THEN
    RETURN NULL;
END
$$;

-- The forms of a row change's rows where plain to_jsonb may fail (see the row captures):
-- new_row, or new_json where jsonb cannot hold the row; old_row, or its key alone.
CREATE OR REPLACE FUNCTION pgfanout.row_forms(op text, new_r anyelement, old_r anyelement, keys text[],
                                              OUT new_row jsonb, OUT old_row jsonb, OUT new_json json)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF op <> 'DELETE' THEN
        new_row := pgfanout.row_jsonb(new_r);
        IF new_row IS NULL THEN
            new_json := to_json(new_r);
        END IF;
    END IF;
    IF op <> 'INSERT' THEN
        old_row := coalesce(pgfanout.row_jsonb(old_r), pgfanout.key_jsonb(old_r, keys));
    END IF;
END
$$;

-- The text forms of a row change's rows (spec: the table's text_columns; see Text forms).
CREATE OR REPLACE FUNCTION pgfanout.row_texts(op text, new_r anyelement, old_r anyelement, spec jsonb,
                                              OUT new_text jsonb, OUT old_text jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF op <> 'DELETE' AND (spec ? 'always' OR strpos(new_r::text, ']={') > 0) THEN
        new_text := pgfanout.texts_of(new_r, spec);
    END IF;
    IF op <> 'INSERT' AND spec ? 'old' AND (spec -> 'old' ? 'always' OR strpos(old_r::text, ']={') > 0) THEN
        old_text := pgfanout.texts_of(old_r, spec -> 'old');
    END IF;
END
$$;

-- Whether the current role reads every row and column of rel: SELECT on the table (or
-- on each of its columns) and no row-level security applying to it. The captures that
-- read a tracked table (capture_state, capture_partition_truncate) need it, as they run
-- as the writer.
CREATE OR REPLACE FUNCTION pgfanout.may_read_all(rel regclass, cols text[] DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (has_table_privilege(rel, 'SELECT')
            OR NOT EXISTS (SELECT FROM pg_attribute a
                           WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
                             AND (cols IS NULL OR a.attname::text = ANY (cols))
                             AND NOT has_column_privilege(rel, a.attnum, 'SELECT')))
       AND NOT row_security_active(rel)
$$;

-- Writes the current state of the row of rel whose primary key is key: its whole row
-- (as op, with old_key = key for an UPDATE) if it exists, otherwise a DELETE of key.
CREATE OR REPLACE FUNCTION pgfanout.capture_state(
    rel regclass, schema_name text, table_name text, op text, keys text[], key jsonb, spec jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    current_row jsonb;
    current_json json;
    found_row boolean;
    state_json_nulls text[];
    state_text jsonb;
    json_cols text[] := pgfanout.json_columns(rel);
BEGIN
    -- This reads the row as the writer (the capture runs with the writer's rights): a row
    -- the writer may not read, or one its row-level security hides, would be recorded as
    -- deleted, so such a writer's nested change is refused rather than captured wrong.
    IF NOT pgfanout.may_read_all(rel) THEN
        RAISE EXCEPTION 'pgfanout: cannot capture a change of % made by a trigger of the same table: role % may not read all of its rows',
            rel, current_user
            USING DETAIL = 'A change made at a deeper trigger level than another change of the same table is captured as the row''s current state, read as the writing role.',
                  HINT = format('GRANT SELECT ON %s TO %I, and exempt it from that table''s row-level security (or have the trigger write as a role that may read it).', rel, current_user);
    END IF;
    EXECUTE format('SELECT true, v.j, CASE WHEN v.j IS NULL THEN to_json(c.*) END, %s, %s '
                   'FROM %s %s c CROSS JOIN LATERAL (SELECT pgfanout.row_jsonb(c.*) AS j) AS v, '
                   'jsonb_to_record($1) AS k(%s) WHERE %s',
                   CASE WHEN cardinality(json_cols) = 0 THEN 'NULL::text[]'
                        ELSE format('CASE WHEN v.j IS NOT NULL THEN %s END', pgfanout.json_nulls_sql(json_cols, 'c')) END,
                   CASE WHEN spec IS NULL OR spec = '{}' THEN 'NULL::jsonb' ELSE pgfanout.texts_sql(spec, 'c') END,
                   CASE WHEN (SELECT relkind FROM pg_class WHERE oid = rel) = 'p' THEN '' ELSE 'ONLY' END,
                   rel,
                   (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ')
                    FROM unnest(keys) AS k JOIN pg_attribute a ON a.attrelid = rel AND a.attname = k),
                   (SELECT string_agg(format('c.%1$I = k.%1$I', k), ' AND ') FROM unnest(keys) AS k))
        INTO found_row, current_row, current_json, state_json_nulls, state_text USING key;
    IF found_row IS NULL THEN
        INSERT INTO pgfanout.changes (schema_name, table_name, op, old_key)
        VALUES (capture_state.schema_name, capture_state.table_name, 'DELETE', key);
    ELSE
        INSERT INTO pgfanout.changes (schema_name, table_name, op, new_row, old_key, json_nulls, new_text, new_json)
        VALUES (capture_state.schema_name, capture_state.table_name,
                CASE WHEN op = 'INSERT' THEN 'INSERT' ELSE 'UPDATE' END, current_row,
                CASE WHEN op = 'INSERT' THEN NULL ELSE key END, state_json_nulls, state_text, current_json);
    END IF;
END
$$;

-- Trigger arguments of every row capture: the primary-key columns; then, for tables with
-- json/jsonb or text-form columns, an empty argument and a probe per json/jsonb column
-- (see JSON nulls); then, for tables with text-form columns, another empty argument and
-- the table's text_columns (see Text forms).

-- The row captures below (capture_insert, capture_row, capture_partition_row) run on
-- every tracked write, as the writer and in the writer's search_path: a SET search_path
-- clause would cost 1.3–3.7 us per call (a setting changed and put back, and the path
-- looked up again after each). So every name in them is schema-qualified: functions,
-- types and operators (OPERATOR(pg_catalog.=) rather than =; no IN, IS DISTINCT FROM or
-- CASE x WHEN, which look = up by the path). An object another role made in a schema on
-- the writer's path can then stand in for none of them. The functions they call keep
-- their SET search_path; they run on the less common paths only. trust_itest
-- (AnotherRolesObjectsOnTheWritersSearchPathNeverRunInTheCapture) puts a stand-in for
-- every pg_catalog function, operator and type named in these bodies ahead of pg_catalog
-- and checks that none runs.

-- Statement-level AFTER INSERT, REFERENCING NEW TABLE AS pgfanout_new.
CREATE OR REPLACE FUNCTION pgfanout.capture_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    r record;
    written pg_catalog.bool := false;
    sep pg_catalog.int4 := pg_catalog.array_position(TG_ARGV, '');
    sep2 pg_catalog.int4;
    keys pg_catalog.text[];
    probes pg_catalog.jsonb[];
    spec pg_catalog.jsonb;
BEGIN
    IF sep IS NOT NULL THEN
        sep2 := pg_catalog.array_position(TG_ARGV, '', sep OPERATOR(pg_catalog.+) 1);
        IF sep2 IS NULL THEN
            probes := TG_ARGV[sep OPERATOR(pg_catalog.+) 1:TG_NARGS OPERATOR(pg_catalog.-) 1]::pg_catalog.jsonb[];
        ELSE
            probes := TG_ARGV[sep OPERATOR(pg_catalog.+) 1:sep2 OPERATOR(pg_catalog.-) 1]::pg_catalog.jsonb[];
            spec := TG_ARGV[sep2 OPERATOR(pg_catalog.+) 1]::pg_catalog.jsonb;
        END IF;
    END IF;
    IF pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.>) 1
       OR pg_catalog.current_setting('pgfanout.nested', true) OPERATOR(pg_catalog.<>) '' THEN
        IF pgfanout.nested_change(TG_RELID) THEN
            keys := CASE WHEN sep IS NULL THEN TG_ARGV ELSE TG_ARGV[0:sep OPERATOR(pg_catalog.-) 1] END;
            FOR r IN SELECT pgfanout.key_of(pgfanout.row_jsonb(n.*), keys) AS k, (n.*)::pg_catalog.record AS t
                     FROM pgfanout_new n LOOP
                PERFORM pgfanout.capture_state(TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT', keys,
                                               coalesce(r.k, pgfanout.key_jsonb_row(r.t, TG_RELID, keys)), spec);
                written := true;
            END LOOP;
        END IF;
    END IF;
    -- A row of 100 kB or more as stored goes through row_jsonb, which cannot fail; a
    -- smaller one through to_jsonb alone, 1 us faster. Stored values are compressed at most
    -- 255 times (lz4; pglz less), so such a row holds under 25 MB of values, and to_jsonb
    -- makes at most about six times its stored size of them (a boolean's byte becomes false):
    -- under the 256 MB jsonb can hold. Tables with json columns (spec ? 'json') always go
    -- through row_jsonb. OFFSET 0 keeps to_jsonb computed once per row (a LATERAL
    -- function call would materialise its result for every row).
    -- The idle flag is read by a statement of its own: measured, one statement that both
    -- writes and reads it (a CTE with RETURNING) costs more.
    IF NOT written THEN
        IF sep IS NULL THEN
            INSERT INTO pgfanout.changes (schema_name, table_name, op, new_row, new_json)
            SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT', o.v, CASE WHEN o.v IS NULL THEN pg_catalog.to_json(o.r) END
            FROM (SELECT (n.*)::pg_catalog.record AS r,
                         CASE WHEN pg_catalog.pg_column_size(n.*) OPERATOR(pg_catalog.<) 100000 THEN pg_catalog.to_jsonb(n.*)
                              ELSE pgfanout.row_jsonb(n.*) END AS v
                  FROM pgfanout_new n OFFSET 0) AS o;
            written := FOUND;
        ELSIF spec IS NULL THEN
            INSERT INTO pgfanout.changes (schema_name, table_name, op, new_row, json_nulls, new_json)
            SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT', o.v,
                   CASE WHEN o.v OPERATOR(pg_catalog.@>) ANY (probes) OR o.v IS NULL
                        THEN pgfanout.json_nulls_of_row(o.r, TG_RELID, probes) END,
                   CASE WHEN o.v IS NULL THEN pg_catalog.to_json(o.r) END
            FROM (SELECT (n.*)::pg_catalog.record AS r,
                         CASE WHEN pg_catalog.pg_column_size(n.*) OPERATOR(pg_catalog.<) 100000 THEN pg_catalog.to_jsonb(n.*)
                              ELSE pgfanout.row_jsonb(n.*) END AS v
                  FROM pgfanout_new n OFFSET 0) AS o;
            written := FOUND;
        ELSE
            INSERT INTO pgfanout.changes (schema_name, table_name, op, new_row, json_nulls, new_text, new_json)
            SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT', o.v,
                   CASE WHEN o.v OPERATOR(pg_catalog.@>) ANY (probes)
                             OR (o.v IS NULL AND pg_catalog.cardinality(probes) OPERATOR(pg_catalog.>) 0)
                        THEN pgfanout.json_nulls_of_row(o.r, TG_RELID, probes) END,
                   CASE WHEN spec OPERATOR(pg_catalog.?) 'always'
                             OR pg_catalog.strpos(o.r::pg_catalog.text, ']={') OPERATOR(pg_catalog.>) 0
                        THEN pgfanout.texts_of_row(o.r, TG_RELID, spec) END,
                   CASE WHEN o.v IS NULL THEN pg_catalog.to_json(o.r) END
            FROM (SELECT (n.*)::pg_catalog.record AS r,
                         CASE WHEN NOT spec OPERATOR(pg_catalog.?) 'json'
                                   AND pg_catalog.pg_column_size(n.*) OPERATOR(pg_catalog.<) 100000
                              THEN pg_catalog.to_jsonb(n.*)
                              ELSE pgfanout.row_jsonb(n.*) END AS v
                  FROM pgfanout_new n OFFSET 0) AS o;
            written := FOUND;
        END IF;
    END IF;
    IF written AND pg_catalog.pg_sequence_last_value('pgfanout.publisher_idle'::pg_catalog.regclass) OPERATOR(pg_catalog.=) 1 THEN
        PERFORM pg_catalog.pg_notify('pgfanout', '');
    END IF;
    RETURN NULL;
END
$$;

-- The shared body of the row-level captures: rel is the table the change is reported
-- for (a partitioned table for its partitions' rows), keys its primary-key columns.
CREATE OR REPLACE FUNCTION pgfanout.capture_row_change(
    rel oid, schema_name text, table_name text, op text, keys text[], new_row jsonb, old_row jsonb,
    json_nulls text[], new_text jsonb, old_text jsonb, new_json json, spec jsonb, json_row_key jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_key jsonb := pgfanout.key_of(old_row, keys);
    new_key jsonb;
BEGIN
    IF pgfanout.nested_change(rel) THEN
        new_key := coalesce(json_row_key, pgfanout.key_of(new_row, keys));
        IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
            PERFORM pgfanout.capture_state(rel, schema_name, table_name, op, keys, old_key, spec);
        END IF;
        IF new_key IS NOT NULL THEN
            PERFORM pgfanout.capture_state(rel, schema_name, table_name, op, keys, new_key, spec);
        END IF;
    ELSE
        INSERT INTO pgfanout.changes (schema_name, table_name, op, new_row, old_key, json_nulls, new_text, old_text, new_json)
        VALUES (capture_row_change.schema_name, capture_row_change.table_name, op, new_row, old_key,
                capture_row_change.json_nulls, capture_row_change.new_text, capture_row_change.old_text,
                capture_row_change.new_json);
    END IF;
END
$$;

-- Row-level AFTER INSERT/UPDATE/DELETE.
CREATE OR REPLACE FUNCTION pgfanout.capture_row() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    sep pg_catalog.int4 := pg_catalog.array_position(TG_ARGV, '');
    sep2 pg_catalog.int4;
    keys pg_catalog.text[];  -- the key columns, where a path needs them
    spec pg_catalog.jsonb;
    new_row pg_catalog.jsonb;
    old_row pg_catalog.jsonb;
    old_key pg_catalog.jsonb;
    json_nulls pg_catalog.text[];
    new_text pg_catalog.jsonb;
    old_text pg_catalog.jsonb;
    new_json pg_catalog.json;
BEGIN
    IF sep IS NOT NULL THEN
        sep2 := pg_catalog.array_position(TG_ARGV, '', sep OPERATOR(pg_catalog.+) 1);
        IF sep2 IS NOT NULL THEN
            spec := TG_ARGV[sep2 OPERATOR(pg_catalog.+) 1]::pg_catalog.jsonb;
        END IF;
    END IF;
    -- to_jsonb cannot fail on a row without json whose stored size is under 100 kB (see
    -- capture_insert); any other goes through a block that catches what it raises.
    IF NOT coalesce(spec OPERATOR(pg_catalog.?) 'json', false)
       AND coalesce(pg_catalog.pg_column_size(NEW), 0) OPERATOR(pg_catalog.<) 100000
       AND coalesce(pg_catalog.pg_column_size(OLD), 0) OPERATOR(pg_catalog.<) 100000 THEN
        IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
            new_row := pg_catalog.to_jsonb(NEW);
        END IF;
        IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
            old_row := pg_catalog.to_jsonb(OLD);
        END IF;
    ELSE
        keys := CASE WHEN sep IS NULL THEN TG_ARGV ELSE TG_ARGV[0:sep OPERATOR(pg_catalog.-) 1] END;
        SELECT f.new_row, f.old_row, f.new_json INTO new_row, old_row, new_json
        FROM pgfanout.row_forms(TG_OP, NEW, OLD, keys) AS f;
    END IF;
    IF sep IS NOT NULL THEN
        IF spec IS NOT NULL THEN
            SELECT f.new_text, f.old_text INTO new_text, old_text FROM pgfanout.row_texts(TG_OP, NEW, OLD, spec) AS f;
        END IF;
        -- The probe check inline: a function call per row (with its SET search_path)
        -- took a sixth of the trigger's time.
        IF new_row OPERATOR(pg_catalog.@>) ANY (TG_ARGV[sep OPERATOR(pg_catalog.+) 1:coalesce(sep2, TG_NARGS) OPERATOR(pg_catalog.-) 1]::pg_catalog.jsonb[])
           OR (new_json IS NOT NULL AND (sep2 IS NULL OR sep2 OPERATOR(pg_catalog.<>) (sep OPERATOR(pg_catalog.+) 1))) THEN
            json_nulls := pgfanout.json_nulls_of(NEW, TG_ARGV[sep OPERATOR(pg_catalog.+) 1:coalesce(sep2, TG_NARGS) OPERATOR(pg_catalog.-) 1]);
        END IF;
    END IF;
    IF pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.>) 1
       OR pg_catalog.current_setting('pgfanout.nested', true) OPERATOR(pg_catalog.<>) '' THEN
        keys := CASE WHEN sep IS NULL THEN TG_ARGV ELSE TG_ARGV[0:sep OPERATOR(pg_catalog.-) 1] END;
        PERFORM pgfanout.capture_row_change(TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, keys,
                                            new_row, old_row, json_nulls, new_text, old_text, new_json, spec,
                                            CASE WHEN new_json IS NOT NULL THEN pgfanout.key_jsonb(NEW, keys) END);
    ELSE
        IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
            IF coalesce(sep, TG_NARGS) OPERATOR(pg_catalog.=) 1 THEN  -- one key column: no function call
                old_key := pg_catalog.jsonb_build_object(TG_ARGV[0], old_row OPERATOR(pg_catalog.->) TG_ARGV[0]);
            ELSE
                old_key := pgfanout.key_of(old_row, CASE WHEN sep IS NULL THEN TG_ARGV
                                                         ELSE TG_ARGV[0:sep OPERATOR(pg_catalog.-) 1] END);
            END IF;
        END IF;
        INSERT INTO pgfanout.changes (schema_name, table_name, op, new_row, old_key, json_nulls, new_text, old_text, new_json)
        VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, new_row, old_key, json_nulls, new_text, old_text, new_json);
    END IF;
    IF pg_catalog.pg_sequence_last_value('pgfanout.publisher_idle'::pg_catalog.regclass) OPERATOR(pg_catalog.=) 1 THEN
        PERFORM pg_catalog.pg_notify('pgfanout', '');
    END IF;
    RETURN NULL;
END
$$;

-- Row-level AFTER INSERT/UPDATE/DELETE of a partitioned table, cloned by PostgreSQL onto
-- each partition: reports the change under the partitioned table's name.
CREATE OR REPLACE FUNCTION pgfanout.capture_partition_row() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER AS $$
DECLARE
    root pg_catalog.oid := pg_catalog.pg_partition_root(TG_RELID);
    root_schema pg_catalog.text;
    root_name pg_catalog.text;
    sep pg_catalog.int4 := pg_catalog.array_position(TG_ARGV, '');
    sep2 pg_catalog.int4;
    keys pg_catalog.text[] := TG_ARGV;
    spec pg_catalog.jsonb;
    new_row pg_catalog.jsonb;
    old_row pg_catalog.jsonb;
    json_nulls pg_catalog.text[];
    new_text pg_catalog.jsonb;
    old_text pg_catalog.jsonb;
    new_json pg_catalog.json;
BEGIN
    SELECT n.nspname, c.relname INTO root_schema, root_name
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE c.oid OPERATOR(pg_catalog.=) root;
    IF sep IS NOT NULL THEN
        keys := TG_ARGV[0:sep OPERATOR(pg_catalog.-) 1];
        sep2 := pg_catalog.array_position(TG_ARGV, '', sep OPERATOR(pg_catalog.+) 1);
        IF sep2 IS NOT NULL THEN
            spec := TG_ARGV[sep2 OPERATOR(pg_catalog.+) 1]::pg_catalog.jsonb;
        END IF;
    END IF;
    -- to_jsonb cannot fail on a row without json whose stored size is under 100 kB (see
    -- capture_insert); any other goes through a block that catches what it raises.
    IF NOT coalesce(spec OPERATOR(pg_catalog.?) 'json', false)
       AND coalesce(pg_catalog.pg_column_size(NEW), 0) OPERATOR(pg_catalog.<) 100000
       AND coalesce(pg_catalog.pg_column_size(OLD), 0) OPERATOR(pg_catalog.<) 100000 THEN
        IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
            new_row := pg_catalog.to_jsonb(NEW);
        END IF;
        IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
            old_row := pg_catalog.to_jsonb(OLD);
        END IF;
    ELSE
        SELECT f.new_row, f.old_row, f.new_json INTO new_row, old_row, new_json
        FROM pgfanout.row_forms(TG_OP, NEW, OLD, keys) AS f;
    END IF;
    IF sep IS NOT NULL THEN
        IF spec IS NOT NULL THEN
            SELECT f.new_text, f.old_text INTO new_text, old_text FROM pgfanout.row_texts(TG_OP, NEW, OLD, spec) AS f;
        END IF;
        IF new_row OPERATOR(pg_catalog.@>) ANY (TG_ARGV[sep OPERATOR(pg_catalog.+) 1:coalesce(sep2, TG_NARGS) OPERATOR(pg_catalog.-) 1]::pg_catalog.jsonb[])
           OR (new_json IS NOT NULL AND (sep2 IS NULL OR sep2 OPERATOR(pg_catalog.<>) (sep OPERATOR(pg_catalog.+) 1))) THEN
            json_nulls := pgfanout.json_nulls_of(NEW, TG_ARGV[sep OPERATOR(pg_catalog.+) 1:coalesce(sep2, TG_NARGS) OPERATOR(pg_catalog.-) 1]);
        END IF;
    END IF;
    IF pg_catalog.pg_trigger_depth() OPERATOR(pg_catalog.>) 1
       OR pg_catalog.current_setting('pgfanout.nested', true) OPERATOR(pg_catalog.<>) '' THEN
        PERFORM pgfanout.capture_row_change(root, root_schema, root_name, TG_OP, keys, new_row, old_row,
                                            json_nulls, new_text, old_text, new_json, spec,
                                            CASE WHEN new_json IS NOT NULL THEN pgfanout.key_jsonb(NEW, keys) END);
    ELSE
        INSERT INTO pgfanout.changes (schema_name, table_name, op, new_row, old_key, json_nulls, new_text, old_text, new_json)
        VALUES (root_schema, root_name, TG_OP, new_row,
                CASE WHEN TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN pgfanout.key_of(old_row, keys) END,
                json_nulls, new_text, old_text, new_json);
    END IF;
    IF pg_catalog.pg_sequence_last_value('pgfanout.publisher_idle'::pg_catalog.regclass) OPERATOR(pg_catalog.=) 1 THEN
        PERFORM pg_catalog.pg_notify('pgfanout', '');
    END IF;
    RETURN NULL;
END
$$;

-- Statement-level AFTER TRUNCATE of an ordinary table (partitioned tables use
-- pgfanout.capture_partition_truncate below).
CREATE OR REPLACE FUNCTION pgfanout.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO pgfanout.changes (schema_name, table_name, op)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, 'TRUNCATE');
    IF pg_sequence_last_value('pgfanout.publisher_idle') = 1 THEN
        PERFORM pg_notify('pgfanout', '');
    END IF;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION pgfanout.capture_insert(), pgfanout.capture_row(),
    pgfanout.capture_partition_row(), pgfanout.capture_truncate() FROM PUBLIC;

-- The INSERT capture of one table. The outbox's row-level security (pgfanout_capture)
-- looks the table up by name for every row inserted, which cost a 1,000-row INSERT about
-- 1 us per row (bench/capture_cost.md). So track() gives each ordinary table a target of
-- its own, checked once per statement. Both objects are named after the md5 of the
-- table's qualified name (insert_capture_key, above): nothing in them depends on the
-- table's oid, so they survive pg_dump and restore, two tables never share them, and a
-- table renamed without track() running again (no event trigger) that shares them with
-- a new table of its old name takes none of their paths.
--   view pgfanout.changes_of_<md5>  the outbox's columns that an INSERT capture writes
--       (no id, ts, old_key or old_text: the outbox's own defaults fill those), with the
--       table's schema, name and INSERT as the defaults of schema_name, table_name and
--       op. PUBLIC may insert only new_row, json_nulls, new_text and new_json. Its check
--       option compares each row's names and op with the table's (a view another role
--       stacks on this one can supply any default, and its defaults are not checked
--       against these column privileges), and admits a statement's rows only if the
--       writing role may write the table now named so: the policy's test, with the
--       names as constants, in an InitPlan run once per statement. Its owner is the
--       outbox's, so the outbox's own policy does not check these rows again.
--   function pgfanout.capture_insert_<md5>()  capture_insert's body run against that
--       view while the table has the names it was made for, and as it is, against the
--       outbox, otherwise (renamed, and track() has not run again): its changes then
--       carry the table's current name, as before.
-- make_insert_capture(rel) makes both from capture_insert's current body (re-running this
-- file makes them again); drop_insert_capture(key) drops both once no trigger calls the
-- function. DROP VIEW ... CASCADE: any role may make a view of its own on top of one of
-- these (a temporary one too), which would otherwise keep it from being dropped.
CREATE OR REPLACE FUNCTION pgfanout.drop_insert_capture(key text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure := to_regprocedure(format('pgfanout.%I()', 'capture_insert_' || key));
BEGIN
    -- Looked up first: DROP ... IF EXISTS would tell every caller of track() it skipped them.
    IF f IS NOT NULL THEN
        IF EXISTS (SELECT FROM pg_trigger WHERE tgfoid = f) THEN
            RETURN;
        END IF;
        EXECUTE format('DROP FUNCTION %s', f);
    END IF;
    IF to_regclass(format('pgfanout.%I', 'changes_of_' || key)) IS NOT NULL THEN
        EXECUTE format('DROP VIEW pgfanout.%I CASCADE', 'changes_of_' || key);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgfanout.make_insert_capture(rel regclass) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nsp name;
    tab name;
    key text;
    view_name text;
    function_name text;
    owner regrole := (SELECT relowner::regrole FROM pg_class WHERE oid = 'pgfanout.changes'::regclass);
    generic text := (SELECT prosrc FROM pg_proc WHERE oid = 'pgfanout.capture_insert()'::regprocedure);
    into_outbox constant text := 'INSERT INTO pgfanout.changes (schema_name, table_name, op, ';
    named constant text := 'SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME, ''INSERT'', ';
    own text;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, tab
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    key := pgfanout.insert_capture_key(nsp, tab);
    view_name := 'changes_of_' || key;
    function_name := 'capture_insert_' || key;
    -- Each of capture_insert's three INSERTs, rewritten for the view: a body that no
    -- longer reads as expected is an error in this file, not something to capture with.
    IF (length(generic) - length(replace(generic, into_outbox, ''))) / length(into_outbox) <> 3
       OR (length(generic) - length(replace(generic, named, ''))) / length(named) <> 3 THEN
        RAISE EXCEPTION 'pgfanout: capture_insert''s INSERTs are not the three make_insert_capture rewrites';
    END IF;
    own := replace(replace(generic, into_outbox, format('INSERT INTO pgfanout.%I (', view_name)), named, 'SELECT ');
    IF to_regclass(format('pgfanout.%I', view_name)) IS NOT NULL THEN
        EXECUTE format('DROP VIEW pgfanout.%I CASCADE', view_name);
    END IF;
    EXECUTE format(
        'CREATE VIEW pgfanout.%I AS '
        'SELECT schema_name, table_name, op, new_row, json_nulls, new_text, new_json FROM pgfanout.changes '
        'WHERE schema_name OPERATOR(pg_catalog.=) %L AND table_name OPERATOR(pg_catalog.=) %L '
        '  AND op OPERATOR(pg_catalog.=) ''INSERT'' '
        '  AND (SELECT CASE WHEN pg_catalog.has_schema_privilege(%L, ''USAGE'') '
        '                   THEN pg_catalog.has_table_privilege(pg_catalog.to_regclass(%L), ''INSERT, UPDATE, DELETE, TRUNCATE'') '
        '                   ELSE false END '
        '               OR pgfanout.may_capture_through(%L, %L, ''INSERT'')) '
        'WITH CASCADED CHECK OPTION',
        view_name, nsp, tab, nsp, format('%I.%I', nsp, tab), nsp, tab);
    EXECUTE format('ALTER VIEW pgfanout.%I ALTER COLUMN schema_name SET DEFAULT %L', view_name, nsp);
    EXECUTE format('ALTER VIEW pgfanout.%I ALTER COLUMN table_name SET DEFAULT %L', view_name, tab);
    EXECUTE format('ALTER VIEW pgfanout.%I ALTER COLUMN op SET DEFAULT %L', view_name, 'INSERT');
    EXECUTE format('REVOKE ALL ON pgfanout.%I FROM PUBLIC', view_name);
    EXECUTE format('GRANT INSERT (new_row, json_nulls, new_text, new_json) ON pgfanout.%I TO PUBLIC', view_name);
    -- The names go into the body as literals only (a name may hold a newline or a quote).
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION pgfanout.%I() RETURNS trigger LANGUAGE plpgsql SECURITY INVOKER AS %L',
        function_name,
        format(E'\nBEGIN\n'
               '    -- Made by pgfanout.make_insert_capture from capture_insert''s body.\n'
               '    IF TG_TABLE_SCHEMA OPERATOR(pg_catalog.=) %L AND TG_TABLE_NAME OPERATOR(pg_catalog.=) %L THEN\n'
               '%s;\n'
               '    END IF;\n'
               '%s;\n'
               'END\n', nsp, tab, own, generic));
    EXECUTE format('REVOKE ALL ON FUNCTION pgfanout.%I() FROM PUBLIC', function_name);
    IF owner::oid <> current_user::regrole::oid THEN
        EXECUTE format('ALTER VIEW pgfanout.%I OWNER TO %s', view_name, owner);
        EXECUTE format('ALTER FUNCTION pgfanout.%I() OWNER TO %s', function_name, owner);
    END IF;
    RETURN format('pgfanout.%I', function_name);
END
$$;

-- Forgets a tracked table that was dropped: its row in pgfanout.tracked, and its INSERT
-- capture function and view (named after the names it was tracked under).
CREATE OR REPLACE FUNCTION pgfanout.forget_dropped(relid oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k record;
BEGIN
    DELETE FROM pgfanout.tracked t WHERE t.relid = forget_dropped.relid RETURNING t.schema_name, t.table_name INTO k;
    IF FOUND THEN
        PERFORM pgfanout.drop_insert_capture(pgfanout.insert_capture_key(k.schema_name, k.table_name));
    END IF;
END
$$;
REVOKE ALL ON FUNCTION pgfanout.drop_insert_capture(text), pgfanout.make_insert_capture(regclass),
    pgfanout.forget_dropped(oid) FROM PUBLIC;

-- Whether transaction id x (a row's xmin) is the current transaction's or one of its
-- subtransactions'. Those are the only in-progress ids whose rows this session can see,
-- and they are not older than the top-level id, which gives x's epoch.
CREATE OR REPLACE FUNCTION pgfanout.written_here(x xid) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN d < 2147483648 THEN pg_xact_status((top + d)::text::xid8) = 'in progress' ELSE false END
    FROM (SELECT pg_current_xact_id()::text::bigint AS top) t,
         LATERAL (SELECT (x::text::bigint - t.top % 4294967296 + 4294967296) % 4294967296 AS d) dd
$$;

-- Whether outbox change truncate_id is a TRUNCATE of root_schema.root_name written by
-- this transaction, with no change of that table after it. Then a partition of it being
-- truncated needs no DELETEs of its own: the TRUNCATE covers its rows on every replica.
-- A change that only a role with TRUNCATE on that table could have written, and nothing
-- of the table since, so a setting forged to point at it cannot hide a write (see
-- capture_partition_truncate). Runs as the installer, who may read the outbox; it reads
-- no user value.
CREATE OR REPLACE FUNCTION pgfanout.truncate_in_force(truncate_id bigint, root_schema text, root_name text)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT FROM pgfanout.changes c
        WHERE c.id = truncate_id AND c.op = 'TRUNCATE'
          AND c.schema_name = root_schema AND c.table_name = root_name
          AND pgfanout.written_here(c.xmin)
          AND NOT EXISTS (SELECT FROM pgfanout.changes l
                          WHERE l.id > truncate_id AND l.schema_name = root_schema AND l.table_name = root_name))
$$;

-- Removes the changes this transaction wrote after outbox id from_id of the table of
-- the TRUNCATE change truncate_id, if that one is this transaction's too: they come
-- before it in id order and it empties the table on the replicas, so they are superseded.
-- Runs as the installer (writers may not delete from the outbox); removes nothing
-- another transaction wrote, nor anything not followed by this transaction's TRUNCATE.
CREATE OR REPLACE FUNCTION pgfanout.supersede_changes(truncate_id bigint, from_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    SELECT c.schema_name, c.table_name INTO t FROM pgfanout.changes c
    WHERE c.id = truncate_id AND c.op = 'TRUNCATE' AND pgfanout.written_here(c.xmin);
    IF FOUND THEN
        DELETE FROM pgfanout.changes c
        WHERE c.id > from_id AND c.id < truncate_id
          AND c.schema_name = t.schema_name AND c.table_name = t.table_name
          AND pgfanout.written_here(c.xmin);
    END IF;
END
$$;

-- Logical mode: whether pgfanout.partition_truncates row marker_id is a TRUNCATE of
-- root_schema.root_name that this transaction wrote and that nothing has been written
-- since, by anyone in this transaction. Then a partition of that table being truncated
-- needs no DELETEs of its own: the TRUNCATE the marker is shipped as covers its rows on
-- every replica. "Nothing since" is read from command ids: each statement that writes
-- takes the next one, so the marker's version is renewed here, and the new version's id
-- must follow the old one's directly (reads between them take none). A marker written
-- by the TRUNCATE of the root in the same statement passes, renewed by each partition in
-- turn; one from an earlier statement, with the partition written since, does not, nor
-- does a marker written by a role with no TRUNCATE of its own on the root (row-level
-- security below). A write between (a user's BEFORE TRUNCATE trigger) only makes the
-- partitions write their DELETEs. A check that fails spends the marker (op SPENT, which
-- the publisher ignores), as its renewal would otherwise pass the next one. Runs as the
-- installer, who may update the table; it reads no user value.
CREATE OR REPLACE FUNCTION pgfanout.truncate_marked(marker_id bigint, root_schema text, root_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    marked cid;
    renewed cid;
BEGIN
    SELECT t.cmin INTO marked FROM pgfanout.partition_truncates t
    WHERE t.id = marker_id AND t.op = 'TRUNCATE'
      AND t.root_schema = truncate_marked.root_schema AND t.root_name = truncate_marked.root_name
      AND pgfanout.written_here(t.xmin);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE pgfanout.partition_truncates t SET op = t.op WHERE t.id = marker_id RETURNING t.cmin INTO renewed;
    IF renewed::text::bigint = marked::text::bigint + 1 THEN
        RETURN true;
    END IF;
    -- Spent for good: renewed after a write, it would pass the next check.
    UPDATE pgfanout.partition_truncates t SET op = 'SPENT' WHERE t.id = marker_id;
    RETURN false;
END
$$;

-- Logical mode: deletes the rows of pgfanout.partition_truncates after after_id that
-- this transaction wrote. The slot has their inserts already, which is all the publisher
-- reads; deleting them keeps the table empty. Runs as the installer (writers may not
-- delete from it); removes nothing another transaction wrote.
CREATE OR REPLACE FUNCTION pgfanout.forget_partition_truncates(after_id bigint) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM pgfanout.partition_truncates t WHERE t.id > after_id AND pgfanout.written_here(t.xmin)
$$;

-- Statement-level BEFORE and AFTER TRUNCATE of a tracked partitioned table (the root) and
-- of each of its leaf partitions. Statement triggers are not cloned onto partitions, so
-- track() puts these on every leaf and the DDL event trigger on new ones.
--   TRUNCATE of leaves only (a partition, a sub-partition, a mid-level partitioned table,
--   several of them): each leaf's BEFORE trigger, while its rows are still there and
--   TRUNCATE already holds its ACCESS EXCLUSIVE locks, writes one DELETE per row of ONLY
--   that leaf, under the root's name with old_key = the primary key, exactly as a DELETE
--   of the row would be captured. A TRUNCATE change of the root would wipe the other
--   partitions on the replicas.
--   TRUNCATE of the root: one TRUNCATE change (written by its BEFORE trigger, while
--   TRUNCATE holds the locks of the root and all its partitions, so no other change of
--   the root comes between it and the truncation), no DELETEs, although PostgreSQL fires
--   the triggers of every partition too.
-- A TRUNCATE statement fires the BEFORE triggers of all its tables, truncates, then fires
-- their AFTER triggers (ExecuteTruncateGuts), all at the same trigger depth, and nothing
-- else runs at that depth in between (a statement run by one of those triggers is one
-- level deeper). A transaction-local setting per root and depth, set by BEFORE triggers
-- and cleared by the AFTER triggers, passes word between them for one statement:
--   'root:N'  the root's BEFORE trigger wrote TRUNCATE change N. A leaf writes nothing
--             only if pgfanout.truncate_in_force(N) confirms it: any session may set
--             the setting, so a leaf never trusts it alone; a forged value only makes the
--             leaf write its DELETEs (a skipped capture would lose rows, a redundant
--             one loses nothing).
--   'from:N'  a leaf wrote DELETEs after outbox id N. Tables are ordered by the
--             statement, then by OID for CASCADE, so a leaf can come before its root
--             (TRUNCATE leaf, root). The root's BEFORE trigger then has those DELETEs
--             removed (pgfanout.supersede_changes), as its TRUNCATE supersedes them.
-- An error in between rolls the setting back with the (sub)transaction.
-- Logical mode: the same, through pgfanout.partition_truncates instead of the outbox
-- (pgoutput publishes partitions under their root's name and sends nothing for a
-- TRUNCATE of a partition): a leaf writes its DELETEs there and deletes them again (the
-- slot carries the inserts, shipped as DELETEs of the root); the root's BEFORE trigger
-- writes a TRUNCATE row there (shipped as a TRUNCATE of the root, which the publisher
-- does not send twice when pgoutput's own follows) and sets
--   'mark:N'  the root's BEFORE trigger wrote TRUNCATE row N. A leaf writes nothing only
--             if pgfanout.truncate_marked(N) confirms it (this transaction's, nothing
--             written since); the AFTER trigger deletes the row.
-- A leaf that comes before its root writes its DELETEs; the root's TRUNCATE follows
-- them in the slot, so nothing needs superseding.
-- The trigger runs as the role truncating, which must read the leaf's key columns (and
-- not be subject to its row-level security, which TRUNCATE ignores); otherwise TRUNCATE of
-- a partition is refused, as its DELETEs could not be written. The root is found with
-- pg_partition_root() at each firing, so a detached partition that kept its triggers
-- reports nothing (and one attached to another tracked table reports to that).
CREATE OR REPLACE FUNCTION pgfanout.capture_partition_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    root oid := pg_partition_root(TG_RELID);
    marker text;
    state text;
    root_schema text;
    root_name text;
    keys text[];
    key_spec jsonb;
    key_texts text;
    outbox_id regclass;
    truncates_id regclass;
    logical_mode boolean;
    last_id bigint;
    written bigint;
BEGIN
    IF root IS NULL THEN
        RETURN NULL;
    END IF;
    marker := format('pgfanout.truncate_%s_%s', root, pg_trigger_depth());
    state := coalesce(current_setting(marker, true), '');
    IF TG_WHEN = 'AFTER' THEN
        IF state <> '' THEN
            PERFORM set_config(marker, '', true);
            IF state LIKE 'mark:%' THEN
                PERFORM pgfanout.forget_partition_truncates(substr(state, 6)::bigint - 1);
            END IF;
        END IF;
        RETURN NULL;
    END IF;
    SELECT n.nspname, c.relname, t.key_columns, t.text_columns -> 'old' INTO root_schema, root_name, keys, key_spec
    FROM pgfanout.tracked t
    JOIN pg_class c ON c.oid = t.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.relid = root;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- The key's text forms (see Text forms), for keys whose to_jsonb form does not read back.
    key_texts := CASE WHEN key_spec IS NULL THEN 'NULL::jsonb' ELSE pgfanout.texts_sql(key_spec, 'p') END;
    logical_mode := pgfanout.logical();
    IF logical_mode THEN
        truncates_id := pg_get_serial_sequence('pgfanout.partition_truncates', 'id')::regclass;
        IF TG_RELID = root THEN
            -- Nothing may be written after this row in this trigger: see truncate_marked.
            INSERT INTO pgfanout.partition_truncates (root_schema, root_name, rel, op)
            VALUES (root_schema, root_name, root, 'TRUNCATE');
            PERFORM set_config(marker, 'mark:' || currval(truncates_id), true);
            RETURN NULL;
        ELSIF state LIKE 'mark:%' AND pgfanout.truncate_marked(substr(state, 6)::bigint, root_schema, root_name) THEN
            RETURN NULL;
        END IF;
    END IF;
    outbox_id := pg_get_serial_sequence('pgfanout.changes', 'id')::regclass;
    IF TG_RELID = root AND NOT logical_mode THEN
        INSERT INTO pgfanout.changes (schema_name, table_name, op)
        VALUES (root_schema, root_name, 'TRUNCATE');
        last_id := currval(outbox_id);
        IF state LIKE 'from:%' THEN
            PERFORM pgfanout.supersede_changes(last_id, substr(state, 6)::bigint);
        END IF;
        PERFORM set_config(marker, 'root:' || last_id, true);
        written := 1;
    ELSIF state LIKE 'root:%' AND NOT logical_mode
          AND pgfanout.truncate_in_force(substr(state, 6)::bigint, root_schema, root_name) THEN
        RETURN NULL;
    ELSE
        -- The rows are read with the statement's snapshot. Under REPEATABLE READ or
        -- SERIALIZABLE that is the transaction's, which misses rows committed since (or
        -- while TRUNCATE waited for its lock), and the replicas would keep them: refuse.
        IF current_setting('transaction_isolation') <> 'read committed' THEN
            RAISE EXCEPTION 'pgfanout: cannot capture TRUNCATE of partition % under % isolation',
                TG_RELID::regclass, upper(current_setting('transaction_isolation'))
                USING DETAIL = 'Its rows are captured as DELETEs read with the transaction''s snapshot, which may miss rows committed since; the replicas would keep them.',
                      HINT = 'Run the TRUNCATE in a READ COMMITTED transaction, or DELETE the rows.';
        END IF;
        IF NOT pgfanout.may_read_all(TG_RELID::regclass, keys) THEN
            RAISE EXCEPTION 'pgfanout: cannot capture TRUNCATE of partition % as role %: it may not read all of its keys', TG_RELID::regclass, current_user
                USING DETAIL = 'TRUNCATE of a partition is captured as one DELETE per row it removes, read as the truncating role; rows it may not see would stay on the replicas.',
                      HINT = format('GRANT SELECT (%s) ON %s TO %I and exempt it from the partition''s row-level security, or truncate %s as a whole.',
                                    (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) AS k), TG_RELID::regclass, current_user, root::regclass);
        END IF;
        IF logical_mode THEN
            last_id := coalesce(pg_sequence_last_value(truncates_id), 0);
            EXECUTE format('INSERT INTO pgfanout.partition_truncates (root_schema, root_name, rel, op, old_key, old_text) '
                           'SELECT $1, $2, $3, %L, jsonb_build_object(%s), %s FROM ONLY %s p',
                           'DELETE',
                           (SELECT string_agg(format('%L, p.%I', k, k), ', ' ORDER BY ord)
                            FROM unnest(keys) WITH ORDINALITY AS u(k, ord)),
                           key_texts, TG_RELID::regclass)
                USING root_schema, root_name, TG_RELID::regclass;
            PERFORM pgfanout.forget_partition_truncates(last_id);
            RETURN NULL;
        END IF;
        -- Every id this statement writes is above the last one handed out so far.
        last_id := coalesce(pg_sequence_last_value(outbox_id), 0);
        -- Nothing has written in this transaction yet, maybe: take its xid before the
        -- change ids, as every other capture does (after the captured write). The
        -- publisher relies on it to tell a rolled-back id from one still in flight.
        PERFORM pg_current_xact_id();
        EXECUTE format('INSERT INTO pgfanout.changes (schema_name, table_name, op, old_key, old_text) '
                       'SELECT $1, $2, %L, jsonb_build_object(%s), %s FROM ONLY %s p',
                       'DELETE',
                       (SELECT string_agg(format('%L, p.%I', k, k), ', ' ORDER BY ord)
                        FROM unnest(keys) WITH ORDINALITY AS u(k, ord)),
                       key_texts, TG_RELID::regclass)
            USING root_schema, root_name;
        GET DIAGNOSTICS written = ROW_COUNT;
        IF written > 0 AND state NOT LIKE 'from:%' THEN
            PERFORM set_config(marker, 'from:' || last_id, true);
        END IF;
    END IF;
    IF written > 0 AND pg_sequence_last_value('pgfanout.publisher_idle') = 1 THEN
        PERFORM pg_notify('pgfanout', '');
    END IF;
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION pgfanout.capture_partition_truncate() FROM PUBLIC;

-- Drops the capture triggers of a table: every trigger calling a pgfanout function,
-- whatever its name (their clones on partitions go with them), and those of its
-- partitions (the TRUNCATE triggers, which are not clones); and the table's INSERT
-- capture function and view (make_insert_capture). Returns how many triggers.
CREATE OR REPLACE FUNCTION pgfanout.drop_triggers(rel regclass) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    dropped integer := 0;
    own_functions text[];
BEGIN
    SELECT array_agg(p.proname) INTO own_functions
    FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
    WHERE tg.tgrelid = rel AND p.pronamespace = 'pgfanout'::regnamespace
      AND p.proname LIKE 'capture\_insert\_%';
    FOR t IN
        SELECT tg.tgname, tg.tgrelid FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
        WHERE (tg.tgrelid = rel OR tg.tgrelid IN (SELECT relid FROM pg_partition_tree(rel)))
          AND tg.tgparentid = 0 AND p.pronamespace = 'pgfanout'::regnamespace
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass);
        dropped := dropped + 1;
    END LOOP;
    PERFORM pgfanout.drop_insert_capture(substr(f, length('capture_insert_') + 1))
    FROM unnest(own_functions) AS f;
    RETURN dropped;
END
$$;

-- The leaf partitions of a partitioned table that lack its two TRUNCATE triggers
-- (pgfanout_truncate_before, pgfanout_truncate: see capture_partition_truncate). Foreign
-- partitions are left out.
CREATE OR REPLACE FUNCTION pgfanout.partitions_without_truncate_capture(rel regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pt.relid
    FROM pg_partition_tree(rel) pt JOIN pg_class c ON c.oid = pt.relid
    WHERE pt.relid <> rel AND c.relkind = 'r'
      AND (SELECT count(*) FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
           WHERE tg.tgrelid = pt.relid AND tg.tgparentid = 0
             AND tg.tgname IN ('pgfanout_truncate_before', 'pgfanout_truncate')
             AND p.proname = 'capture_partition_truncate'
             AND p.pronamespace = 'pgfanout'::regnamespace) <> 2
$$;

-- Puts the two statement triggers of capture_partition_truncate on a partitioned table or
-- one of its leaf partitions.
CREATE OR REPLACE FUNCTION pgfanout.add_truncate_triggers(rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER pgfanout_truncate_before BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION pgfanout.capture_partition_truncate()', rel);
    EXECUTE format('CREATE TRIGGER pgfanout_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION pgfanout.capture_partition_truncate()', rel);
END
$$;
REVOKE ALL ON FUNCTION pgfanout.add_truncate_triggers(regclass) FROM PUBLIC;

-- Puts the TRUNCATE triggers on the leaf partitions of a tracked partitioned table that
-- lack them (after any other pgfanout trigger of their own is dropped). Returns how many.
CREATE OR REPLACE FUNCTION pgfanout.track_partitions(rel regclass) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part regclass;
    added integer := 0;
BEGIN
    FOR part IN SELECT * FROM pgfanout.partitions_without_truncate_capture(rel) LOOP
        PERFORM pgfanout.drop_triggers(part);
        PERFORM pgfanout.add_truncate_triggers(part);
        added := added + 1;
    END LOOP;
    RETURN added;
END
$$;

-- Whether the capture is logical (set_capture). The capture triggers run as the writer,
-- who may not read pgfanout.capture (it holds the slot's token): this runs as its owner.
CREATE OR REPLACE FUNCTION pgfanout.logical() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT mode = 'logical' FROM pgfanout.capture), false)
$$;

-- Logical mode: puts a table in publication pgfanout (a partitioned table with its
-- partitions, published under its own name; an inheritance parent without its children,
-- as the triggers capture it) with REPLICA IDENTITY FULL on it and on every partition,
-- so that an UPDATE's old row carries every value: pgoutput sends an unchanged TOASTed
-- value as "unchanged" without it, and the publisher takes it from the old row. Returns
-- the table's replica identity before ('d', 'n', 'f', or its identity index's name).
CREATE OR REPLACE FUNCTION pgfanout.publish_table(rel regclass) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prior text;
    part regclass;
BEGIN
    SELECT CASE c.relreplident WHEN 'i' THEN
               (SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
           ELSE c.relreplident::text END
    INTO prior FROM pg_class c WHERE c.oid = rel;
    FOR part IN SELECT c.oid FROM pg_class c
                WHERE (c.oid = rel OR c.oid IN (SELECT relid FROM pg_partition_tree(rel)))
                  AND c.relkind IN ('r', 'p') AND c.relreplident <> 'f' LOOP
        EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', part);
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                   WHERE p.pubname = 'pgfanout' AND pr.prrelid = rel) THEN
        IF (SELECT relkind FROM pg_class WHERE oid = rel) = 'p' THEN
            EXECUTE format('ALTER PUBLICATION pgfanout ADD TABLE %s', rel);
        ELSE
            EXECUTE format('ALTER PUBLICATION pgfanout ADD TABLE ONLY %s', rel);
        END IF;
    END IF;
    RETURN prior;
END
$$;

-- Takes a table out of publication pgfanout, and gives it back the replica identity it
-- had before publish_table (prior; NULL keeps the present one). True if it was in it.
CREATE OR REPLACE FUNCTION pgfanout.unpublish_table(rel regclass, prior text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part regclass;
BEGIN
    IF prior IS NOT NULL AND to_regclass(rel::text) IS NOT NULL THEN
        FOR part IN SELECT c.oid FROM pg_class c
                    WHERE (c.oid = rel OR c.oid IN (SELECT relid FROM pg_partition_tree(rel)))
                      AND c.relkind IN ('r', 'p') AND c.relreplident = 'f' LOOP
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY %s', part,
                           CASE prior WHEN 'd' THEN 'DEFAULT' WHEN 'n' THEN 'NOTHING' WHEN 'f' THEN 'FULL'
                                      ELSE CASE WHEN part = rel AND to_regclass(prior) IS NOT NULL
                                                THEN format('USING INDEX %I', (SELECT relname FROM pg_class WHERE oid = to_regclass(prior)))
                                                ELSE 'DEFAULT' END END);
        END LOOP;
    END IF;
    IF EXISTS (SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
               WHERE p.pubname = 'pgfanout' AND pr.prrelid = rel) THEN
        EXECUTE format('ALTER PUBLICATION pgfanout DROP TABLE %s', rel);
        RETURN true;
    END IF;
    RETURN false;
END
$$;
REVOKE ALL ON FUNCTION pgfanout.publish_table(regclass), pgfanout.unpublish_table(regclass, text) FROM PUBLIC;

-- Starts capturing a table, or refreshes its capture (after its primary key, its name or
-- its place in an inheritance tree changed). Refuses a table without a primary key.
CREATE OR REPLACE FUNCTION pgfanout.track(rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
    qualified text;
    keys text[];
    json_cols text[];
    text_cols jsonb;
    args text;
    capture text;
    row_level text;
    prior text;
BEGIN
    SELECT n.nspname, cl.relname, cl.relkind, cl.relispartition, cl.relpersistence INTO c
    FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
    WHERE cl.oid = rel;
    qualified := format('%I.%I', c.nspname, c.relname);
    IF c.nspname = 'pgfanout' THEN
        RAISE EXCEPTION 'pgfanout: cannot track %, a table of pgfanout itself', qualified;
    END IF;
    IF c.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pgfanout: cannot track %: it is not a table', qualified
            USING HINT = 'Only ordinary and partitioned tables can be tracked.';
    END IF;
    IF c.relpersistence = 't' THEN
        RAISE EXCEPTION 'pgfanout: cannot track %: it is a temporary table', qualified;
    END IF;
    IF c.relispartition THEN
        RAISE EXCEPTION 'pgfanout: cannot track %: it is a partition of %', qualified,
            pg_partition_root(rel)::regclass
            USING HINT = 'Track the partitioned table instead; its partitions are captured with it.';
    END IF;
    keys := pgfanout.primary_key(rel);
    IF keys IS NULL THEN
        RAISE EXCEPTION 'pgfanout: cannot track %: it has no primary key', qualified
            USING HINT = format('pgfanout identifies rows by their primary key: add one (ALTER TABLE %s ADD PRIMARY KEY (...)); '
                                'to replace a key, drop and add it in one ALTER TABLE.', qualified);
    END IF;
    IF pgfanout.primary_key_deferrable(rel) THEN
        RAISE EXCEPTION 'pgfanout: cannot track %: its primary key is DEFERRABLE', qualified
            USING DETAIL = 'With a deferred key check, a transaction can insert a key before another one''s delete of it commits, so the changes would not be captured in commit order.',
                  HINT = 'Recreate it NOT DEFERRABLE: ALTER TABLE ... DROP CONSTRAINT ..., ADD PRIMARY KEY (...).';
    END IF;
    IF c.relpersistence = 'u' THEN
        RAISE WARNING 'pgfanout: % is unlogged: a crash empties it without any change being captured', qualified;
    END IF;

    json_cols := pgfanout.json_columns(rel);
    text_cols := pgfanout.text_columns(rel, keys);
    args := (SELECT string_agg(quote_literal(k), ', ') FROM unnest(keys) AS k);
    IF cardinality(json_cols) > 0 OR text_cols <> '{}' THEN
        args := args || ', ' || quote_literal('')
                || coalesce((SELECT string_agg(', ' || quote_literal(jsonb_build_object(k, NULL)::text), '')
                             FROM unnest(json_cols) AS k), '');
    END IF;
    IF text_cols <> '{}' THEN
        args := args || ', ' || quote_literal('') || ', ' || quote_literal(text_cols::text);
    END IF;
    IF pgfanout.logical() THEN
        IF c.relpersistence = 'u' THEN
            RAISE EXCEPTION 'pgfanout: cannot track % in logical capture: it is unlogged', qualified
                USING DETAIL = 'The changes of an unlogged table are not in the WAL.',
                      HINT = format('ALTER TABLE %s SET LOGGED, or capture with triggers: SELECT pgfanout.set_capture(''trigger'').', qualified);
        END IF;
        PERFORM pgfanout.drop_triggers(rel);
        prior := pgfanout.publish_table(rel);
        IF c.relkind = 'p' THEN
            -- pgoutput publishes a partitioned table's changes under its name, but not a
            -- TRUNCATE of one of its partitions: these triggers capture that TRUNCATE.
            PERFORM pgfanout.add_truncate_triggers(rel);
            PERFORM pgfanout.track_partitions(rel);
        END IF;
        INSERT INTO pgfanout.tracked (relid, schema_name, table_name, key_columns, json_columns, prior_identity, text_columns)
        VALUES (rel, c.nspname, c.relname, keys, json_cols, prior, text_cols)
        ON CONFLICT (relid) DO UPDATE
            SET schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name,
                key_columns = EXCLUDED.key_columns, json_columns = EXCLUDED.json_columns,
                text_columns = EXCLUDED.text_columns,
                prior_identity = coalesce(pgfanout.tracked.prior_identity, EXCLUDED.prior_identity);
        RETURN;
    END IF;
    capture := pgfanout.capture_function(rel);
    row_level := CASE WHEN capture = 'pgfanout.capture_partition_row'
                      THEN capture ELSE 'pgfanout.capture_row' END;
    PERFORM pgfanout.drop_triggers(rel);
    IF capture NOT IN ('pgfanout.capture_partition_row', 'pgfanout.capture_row') THEN
        capture := pgfanout.make_insert_capture(rel);
        EXECUTE format('CREATE TRIGGER pgfanout_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS pgfanout_new '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)', rel, capture, args);
    ELSE
        EXECUTE format('CREATE TRIGGER pgfanout_insert AFTER INSERT ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION %s(%s)', rel, row_level, args);
    END IF;
    EXECUTE format('CREATE TRIGGER pgfanout_update AFTER UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION %s(%s)', rel, row_level, args);
    EXECUTE format('CREATE TRIGGER pgfanout_delete AFTER DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION %s(%s)', rel, row_level, args);
    IF c.relkind = 'p' THEN
        PERFORM pgfanout.add_truncate_triggers(rel);
        PERFORM pgfanout.track_partitions(rel);
    ELSE
        EXECUTE format('CREATE TRIGGER pgfanout_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION pgfanout.capture_truncate()', rel);
    END IF;

    INSERT INTO pgfanout.tracked (relid, schema_name, table_name, key_columns, json_columns, text_columns)
    VALUES (rel, c.nspname, c.relname, keys, json_cols, text_cols)
    ON CONFLICT (relid) DO UPDATE
        SET schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name,
            key_columns = EXCLUDED.key_columns, json_columns = EXCLUDED.json_columns,
            text_columns = EXCLUDED.text_columns;
END
$$;

-- Stops capturing a table. Changes already in the outbox are still published.
CREATE OR REPLACE FUNCTION pgfanout.untrack(rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped integer := pgfanout.drop_triggers(rel);
    prior text;
BEGIN
    DELETE FROM pgfanout.tracked WHERE relid = rel RETURNING prior_identity INTO prior;
    IF pgfanout.unpublish_table(rel, prior) THEN
        dropped := dropped + 1;
    END IF;
    IF dropped = 0 AND NOT FOUND THEN
        RAISE NOTICE 'pgfanout: % is not tracked', rel;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION pgfanout.track(regclass), pgfanout.untrack(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgfanout.track_partitions(regclass) FROM PUBLIC;

-- Switches the capture (README, "Capture modes"). set_capture('logical') creates the
-- logical replication slot first: PostgreSQL allows that only before the transaction
-- writes anything, and waits there for every transaction that is writing to end. From
-- the slot's start on, the WAL is kept for the publisher. Then each tracked table moves
-- from its triggers into publication pgfanout. Dropping a trigger waits for the table's
-- writers, so every transaction that wrote the outbox ends before this one commits, and
-- every later one is in the WAL only: pgoutput reads the publication as of each decoded
-- transaction, so nothing is captured twice or missed. A failure after the slot was made
-- drops it again; a slot left by a call whose transaction was rolled back has this
-- install's name and is made anew. set_capture('trigger') puts the triggers back and
-- takes the tables out of the publication in one transaction; the slot stays until the
-- publisher has shipped what it holds up to this switch, then the publisher drops it.
-- Calling it for the mode in force does nothing. Returns the mode.
CREATE OR REPLACE FUNCTION pgfanout.set_capture(mode text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cur record;
    slot name;
    start_lsn pg_lsn;
    t record;
    seq text := pg_get_serial_sequence('pgfanout.changes', 'id');
    bound numeric;
    message text;
    detail text;
    hint text;
    state text;
    installing text;
BEGIN
    IF mode IS NULL OR mode NOT IN ('trigger', 'logical') THEN
        RAISE EXCEPTION 'pgfanout: unknown capture mode %', coalesce(quote_literal(mode), 'NULL')
            USING HINT = 'Use set_capture(''logical'') or set_capture(''trigger'').';
    END IF;
    SELECT c.mode, c.slot_name, c.slot_token INTO cur FROM pgfanout.capture c;
    IF cur.mode = set_capture.mode THEN
        RETURN cur.mode;
    END IF;
    -- The DDL event trigger would put back, half-way, the capture this switch takes away.
    installing := current_setting('pgfanout.installing', true);
    PERFORM set_config('pgfanout.installing', 'on', true);

    IF set_capture.mode = 'logical' THEN
        IF current_setting('wal_level') <> 'logical' THEN
            RAISE EXCEPTION 'pgfanout: logical capture needs wal_level = logical; it is %', current_setting('wal_level')
                USING HINT = 'ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (and check max_replication_slots and max_wal_senders).';
        END IF;
        IF cur.slot_name IS NOT NULL THEN
            RAISE EXCEPTION 'pgfanout: replication slot % still holds changes from before the switch back to trigger capture', cur.slot_name
                USING HINT = 'Start the publisher and let it ship them (it then drops the slot), and switch again.';
        END IF;
        slot := 'pgfanout_' || substr(cur.slot_token, 1, 16);
        IF EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = slot AND active) THEN
            RAISE EXCEPTION 'pgfanout: replication slot % is in use by process %', slot,
                (SELECT active_pid FROM pg_replication_slots WHERE slot_name = slot);
        END IF;
        -- Left by a call that was rolled back (a slot survives that): nothing was shipped
        -- from it.
        IF EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = slot) THEN
            PERFORM pg_drop_replication_slot(slot);
        END IF;
        SELECT lsn INTO start_lsn FROM pg_create_logical_replication_slot(slot, 'pgoutput');
        BEGIN
            UPDATE pgfanout.capture SET mode = 'logical', slot_name = slot, switched_at = now();
            FOR t IN SELECT k.relid FROM pgfanout.tracked k ORDER BY k.relid LOOP
                PERFORM pgfanout.track(t.relid);
            END LOOP;
            -- Every writer of the outbox has ended (its table's lock was taken above).
            EXECUTE format('SELECT greatest(last_value, 0) FROM %s', seq) INTO bound;
            UPDATE pgfanout.logical_position
               SET lsn = start_lsn, last_id = greatest(last_id, bound::bigint);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                                    hint = PG_EXCEPTION_HINT, state = RETURNED_SQLSTATE;
            PERFORM pg_drop_replication_slot(slot);
            RAISE EXCEPTION USING MESSAGE = message, DETAIL = detail, HINT = hint, ERRCODE = state;
        END;
        -- A publisher in trigger mode reads pgfanout.capture only when told (at commit).
        PERFORM pg_notify('pgfanout_capture', 'logical');
        PERFORM set_config('pgfanout.installing', coalesce(installing, ''), true);
        RETURN 'logical';
    END IF;

    FOR t IN SELECT k.relid, k.prior_identity FROM pgfanout.tracked k ORDER BY k.relid LOOP
        PERFORM pgfanout.unpublish_table(t.relid, t.prior_identity);
        UPDATE pgfanout.tracked k SET prior_identity = NULL WHERE k.relid = t.relid;
    END LOOP;
    UPDATE pgfanout.capture SET mode = 'trigger', switched_at = now();
    FOR t IN SELECT k.relid FROM pgfanout.tracked k ORDER BY k.relid LOOP
        PERFORM pgfanout.track(t.relid);
    END LOOP;
    -- Outbox ids from now on must be above every id the publisher gives the changes the
    -- slot still holds. Those changes are of transactions that end after
    -- logical_position.lsn, whose WAL lies after the slot's restart_lsn, and each change
    -- takes at least one byte of it: so their ids are below last_id plus the WAL written
    -- since restart_lsn. (The tables' locks, taken above, keep their writers out until
    -- this commits.)
    SELECT p.last_id + (pg_current_wal_insert_lsn() - coalesce(s.restart_lsn, p.lsn)) + 1
    INTO bound
    FROM pgfanout.logical_position p LEFT JOIN pg_replication_slots s ON s.slot_name = cur.slot_name;
    EXECUTE format('SELECT setval(%L, greatest(%s, (SELECT last_value FROM %s)))', seq, bound, seq);
    PERFORM pg_notify('pgfanout_capture', 'trigger');
    PERFORM set_config('pgfanout.installing', coalesce(installing, ''), true);
    RETURN 'trigger';
END
$$;
REVOKE ALL ON FUNCTION pgfanout.set_capture(text) FROM PUBLIC;

-- Logical mode: the publisher puts a change here instead of publishing it when the
-- broker had no queue for its table, or when its table still has changes here (they go
-- first). It keeps the id the publisher gave it. Runs as the outbox's owner (row-level
-- security would ask the publisher for rights on the table); only the publisher's role
-- may call it (sql/roles.sql), and that role can publish any change to the broker anyway.
-- A publisher that stopped after parking a change and before storing its position gets
-- the change again from the slot, with the same id: it is there already, once.
CREATE OR REPLACE FUNCTION pgfanout.park(id bigint, schema_name text, table_name text, op text,
                                         new_row json, old_key jsonb, ts timestamptz, json_nulls jsonb,
                                         new_text jsonb, old_text jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    row_jsonb jsonb;
    row_json json;
BEGIN
    -- A row jsonb cannot hold (a json value with \u0000, or a number numeric cannot
    -- hold) is kept as json, as the trigger capture keeps it (see row_jsonb).
    BEGIN
        row_jsonb := new_row::jsonb;
    EXCEPTION WHEN program_limit_exceeded OR untranslatable_character OR numeric_value_out_of_range THEN
        row_json := new_row;
    END;
    INSERT INTO pgfanout.changes (id, schema_name, table_name, op, new_row, old_key, ts, json_nulls, new_text, old_text, new_json)
    OVERRIDING SYSTEM VALUE
    VALUES (park.id, park.schema_name, park.table_name, park.op, row_jsonb, park.old_key, park.ts,
            (SELECT array_agg(x) FROM jsonb_array_elements_text(park.json_nulls) AS x), park.new_text, park.old_text, row_json)
    ON CONFLICT (id) DO NOTHING;
END
$$;
REVOKE ALL ON FUNCTION pgfanout.park(bigint, text, text, text, json, jsonb, timestamptz, jsonb, jsonb, jsonb) FROM PUBLIC;
-- The eight-argument park of earlier installs: its grantees (sql/roles.sql: the
-- publisher) get this one instead.
DO $$
DECLARE
    old_park regprocedure := to_regprocedure('pgfanout.park(bigint, text, text, text, jsonb, jsonb, timestamptz, jsonb)');
    g record;
BEGIN
    IF old_park IS NULL THEN
        RETURN;
    END IF;
    FOR g IN SELECT DISTINCT a.grantee FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) AS a
             WHERE p.oid = old_park AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION pgfanout.park(bigint, text, text, text, json, jsonb, timestamptz, jsonb, jsonb, jsonb) TO %s',
                       g.grantee::regrole);
    END LOOP;
    DROP FUNCTION pgfanout.park(bigint, text, text, text, jsonb, jsonb, timestamptz, jsonb);
END
$$;

-- Drops the TRUNCATE triggers of tables that are no longer partitions of a tracked table
-- (detached, or their tracked table untracked without them). They would write nothing
-- (capture_partition_truncate looks up the root at each firing), but should not stay.
-- Returns how many triggers were dropped.
CREATE OR REPLACE FUNCTION pgfanout.drop_detached_truncate_triggers() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    dropped integer := 0;
BEGIN
    FOR t IN
        SELECT tg.tgname, tg.tgrelid::regclass AS rel FROM pg_trigger tg
        WHERE tg.tgfoid = 'pgfanout.capture_partition_truncate()'::regprocedure
          AND NOT EXISTS (SELECT FROM pgfanout.tracked k WHERE k.relid = pg_partition_root(tg.tgrelid))
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
REVOKE ALL ON FUNCTION pgfanout.drop_detached_truncate_triggers() FROM PUBLIC;

-- Tracked tables whose capture no longer matches the table: dropped, renamed, primary
-- key changed or made deferrable, its json/jsonb columns changed, moved in or out of an
-- inheritance tree, attached as a
-- partition, a capture trigger dropped by hand, or (partitioned) a leaf partition without
-- the TRUNCATE triggers. Only the tables in among are checked
-- (all of them when among is NULL); dropped ones are always reported.
CREATE OR REPLACE FUNCTION pgfanout.stale_tracking(among oid[])
RETURNS TABLE (relid oid, dropped boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.relid::oid, c.oid IS NULL
    FROM pgfanout.tracked t
    LEFT JOIN pg_class c ON c.oid = t.relid
    LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid IS NULL
       OR ((among IS NULL OR c.oid = ANY (among))
           AND (n.nspname <> t.schema_name
                OR c.relname <> t.table_name
                OR c.relispartition
                OR pgfanout.primary_key(c.oid) IS DISTINCT FROM t.key_columns
                OR pgfanout.json_columns(c.oid) IS DISTINCT FROM t.json_columns
                OR pgfanout.text_columns(c.oid, t.key_columns) IS DISTINCT FROM t.text_columns
                OR pgfanout.primary_key_deferrable(c.oid)
                OR (pgfanout.logical() AND (
                       NOT EXISTS (SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                                   WHERE p.pubname = 'pgfanout' AND pr.prrelid = c.oid)
                       OR c.relreplident <> 'f'
                       OR EXISTS (SELECT FROM pg_partition_tree(c.oid) pt JOIN pg_class pc ON pc.oid = pt.relid
                                  WHERE pc.relkind IN ('r', 'p') AND pc.relreplident <> 'f')
                       OR EXISTS (SELECT FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
                                  WHERE tg.tgrelid = c.oid AND p.pronamespace = 'pgfanout'::regnamespace
                                    AND p.proname <> 'capture_partition_truncate')
                       OR EXISTS (SELECT FROM pgfanout.partitions_without_truncate_capture(c.oid))))
                OR NOT pgfanout.logical() AND (pgfanout.capture_function(c.oid) IS DISTINCT FROM
                   (SELECT tg.tgfoid::regproc::text FROM pg_trigger tg
                    WHERE tg.tgrelid = c.oid AND tg.tgname = 'pgfanout_insert')
                OR (SELECT count(*) FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
                    WHERE tg.tgrelid = c.oid AND tg.tgparentid = 0
                      AND p.pronamespace = 'pgfanout'::regnamespace)
                   <> CASE WHEN c.relkind = 'p' THEN 5 ELSE 4 END
                OR EXISTS (SELECT FROM pgfanout.partitions_without_truncate_capture(c.oid)))))
$$;

-- Event trigger body: keeps the capture of tracked tables in step with DDL, so that a
-- renamed key column or a new primary key never leaves a trigger writing wrong old keys.
-- A change that would leave a tracked table uncapturable (primary key dropped or made
-- deferrable, table attached as a partition) is refused, which aborts the DDL. Only the
-- tables the command touched are judged (with their inheritance parents and children, and
-- the tables of a renamed schema), so DDL elsewhere never fails because of them.
-- A leaf partition created in or attached to a tracked partitioned table, at any depth,
-- gets the TRUNCATE triggers (statement triggers are not cloned; adding them is all that
-- is needed, the rest of the capture stays); after DDL on a partitioned table (DETACH is
-- one) these triggers are dropped from tables that are no longer partitions of a tracked
-- table.
CREATE OR REPLACE FUNCTION pgfanout.on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    touched oid[];
    s record;
    message text;
    hint text;
BEGIN
    -- install.sql sets pgfanout.installing; any session can set it, so it only counts
    -- for the owner of pgfanout (and superusers). session_user, as this function runs as
    -- its owner; a role that may SET ROLE to the owner is trusted as the owner.
    IF to_regclass('pgfanout.tracked') IS NULL
       OR (current_setting('pgfanout.installing', true) = 'on'
           AND pg_has_role(session_user, (SELECT nspowner FROM pg_namespace WHERE nspname = 'pgfanout'), 'MEMBER')) THEN
        RETURN;
    END IF;
    WITH cmd AS (SELECT classid, objid FROM pg_event_trigger_ddl_commands()),
    rel AS (
        SELECT objid FROM cmd WHERE classid = 'pg_class'::regclass
        UNION SELECT oid FROM pg_class
              WHERE relnamespace IN (SELECT objid FROM cmd WHERE classid = 'pg_namespace'::regclass)
    )
    SELECT array_agg(objid) INTO touched FROM (
        SELECT objid FROM rel
        UNION SELECT i.inhparent FROM pg_inherits i JOIN rel ON i.inhrelid = rel.objid
        UNION SELECT i.inhrelid FROM pg_inherits i JOIN rel ON i.inhparent = rel.objid
    ) r;
    -- A table owner may switch triggers off or make a table unlogged; for a tracked table
    -- either would leave changes uncaptured (a crash empties an unlogged table), so it
    -- is refused. A superuser can still do it with pgfanout.installing set.
    SELECT format('trigger %I on %s is %s', tg.tgname, tg.tgrelid::regclass,
                  CASE tg.tgenabled WHEN 'D' THEN 'disabled' ELSE 'set to fire on replicas only' END)
    INTO message
    FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
    WHERE tg.tgrelid = ANY (touched) AND p.pronamespace = 'pgfanout'::regnamespace
      AND tg.tgenabled IN ('D', 'R')
    LIMIT 1;
    IF message IS NULL THEN
        SELECT format('%s is unlogged', c.oid::regclass) INTO message
        FROM pg_class c
        WHERE c.oid = ANY (touched) AND c.relpersistence = 'u'
          AND EXISTS (SELECT FROM pgfanout.tracked k WHERE k.relid IN (c.oid, pg_partition_root(c.oid)))
        LIMIT 1;
    END IF;
    IF message IS NOT NULL THEN
        RAISE EXCEPTION 'pgfanout: refused: %', message
            USING DETAIL = 'Its changes would no longer be captured for the replicas (an unlogged table is emptied by a crash without any change captured).',
                  HINT = 'Stop capturing the table first (SELECT pgfanout.untrack(...)), or, to keep it, ENABLE the trigger / SET LOGGED.';
    END IF;
    PERFORM pgfanout.track_partitions(k.relid)
    FROM pgfanout.tracked k JOIN pg_class c ON c.oid = k.relid
    WHERE c.relkind = 'p' AND k.relid IN (SELECT pg_partition_root(x) FROM unnest(touched) AS x);
    IF EXISTS (SELECT FROM pg_class WHERE oid = ANY (touched) AND relkind = 'p') THEN
        PERFORM pgfanout.drop_detached_truncate_triggers();
    END IF;
    FOR s IN SELECT * FROM pgfanout.stale_tracking(coalesce(touched, '{}')) LOOP
        IF s.dropped THEN
            PERFORM pgfanout.forget_dropped(s.relid);
            CONTINUE;
        END IF;
        BEGIN
            PERFORM pgfanout.track(s.relid::regclass);
        EXCEPTION WHEN raise_exception THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
            RAISE EXCEPTION '%', message
                USING DETAIL = format('%s is tracked by pgfanout, so this change is refused.', s.relid::regclass),
                      HINT = format('%s Or stop capturing it first: SELECT pgfanout.untrack(%L).',
                                    hint, s.relid::regclass::text);
        END;
    END LOOP;
END
$$;

-- Row-level security of the outbox. A role may insert a change of a table only if it may
-- write that table: for INSERT, UPDATE and DELETE changes any of INSERT, UPDATE (on
-- a column or more), DELETE or TRUNCATE, as a nested capture records a row's state
-- whatever the statement was; for a TRUNCATE change, TRUNCATE, since a TRUNCATE change
-- empties the table on every replica. The policy checks the table's own grants first,
-- in as few function calls as it can (its expression is set up again at every statement,
-- a cost that grows with each call in it); pgfanout.may_capture_through covers rights on
-- some columns only and the writes PostgreSQL allows through another table, checked only
-- when that fails.

-- Whether the current role holds any right to change rows of rel.
CREATE OR REPLACE FUNCTION pgfanout.may_write(rel oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT has_any_column_privilege(rel, 'INSERT, UPDATE') OR has_table_privilege(rel, 'DELETE, TRUNCATE')
$$;

-- Whether the current role may write a change (op) of schema_name.table_name, when the
-- policy's first check (rights on the table, through a schema the role may use) failed:
--   the table itself, found without USAGE on its schema (which writing needs not);
--   a partitioned table's changes carry its name whichever partition was written, so a
--   right on any of its partitions counts (not for a TRUNCATE change of the whole table);
--   UPDATE, DELETE and TRUNCATE of an inheritance parent reach its children with the
--   parent's rights checked only, so a right on an ancestor counts (TRUNCATE on an
--   ancestor for a TRUNCATE change);
--   foreign-key actions (ON DELETE/UPDATE CASCADE, SET NULL, SET DEFAULT) change rows of
--   the referencing table, and their captures fire as the role whose write started them:
--   an UPDATE or DELETE change counts if the role may write a table the table's
--   cascading keys reach, directly or through other cascading keys.
CREATE OR REPLACE FUNCTION pgfanout.may_capture_through(schema_name text, table_name text, op text)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel oid;
    kind "char";
BEGIN
    SELECT c.oid, c.relkind INTO rel, kind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = may_capture_through.schema_name AND c.relname = may_capture_through.table_name;
    IF rel IS NULL THEN
        RETURN false;
    ELSIF op = 'TRUNCATE' THEN
        RETURN has_table_privilege(rel, 'TRUNCATE')
            OR EXISTS (WITH RECURSIVE up(relid) AS (
                           SELECT inhparent FROM pg_inherits WHERE inhrelid = rel
                           UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.relid)
                       SELECT FROM up WHERE kind <> 'p' AND has_table_privilege(up.relid, 'TRUNCATE'));
    ELSIF pgfanout.may_write(rel) THEN
        RETURN true;
    ELSIF kind = 'p' AND EXISTS (SELECT FROM pg_partition_tree(rel) p WHERE p.relid <> rel AND pgfanout.may_write(p.relid)) THEN
        RETURN true;
    ELSIF EXISTS (WITH RECURSIVE up(relid) AS (
                      SELECT inhparent FROM pg_inherits WHERE inhrelid = rel
                      UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.relid)
                  SELECT FROM up WHERE pgfanout.may_write(up.relid)) THEN
        RETURN true;
    END IF;
    RETURN op IN ('UPDATE', 'DELETE') AND EXISTS (
        WITH RECURSIVE src(relid) AS (
            SELECT k.confrelid FROM pg_constraint k
            WHERE k.conrelid = rel AND k.contype = 'f'
              AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))
            UNION
            SELECT k.confrelid FROM pg_constraint k JOIN src ON k.conrelid = src.relid
            WHERE k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd')))
        SELECT FROM src WHERE pgfanout.may_write(src.relid));
END
$$;

-- Grants (re-running this file brings an older install to them). Writers of tracked
-- tables are whatever roles PostgreSQL lets write them, including a referencing table's
-- owner, as whom foreign-key cascades run: so PUBLIC. It may insert changes (the policy
-- above decides which), read the idle flag (table and sequence) and the tracked tables (names and key
-- columns, which pg_trigger shows anyway), and read the outbox's id sequence (currval,
-- for the partition-TRUNCATE capture). Nothing else: reading and deleting the outbox is
-- for the publisher (sql/roles.sql).
REVOKE ALL ON SCHEMA pgfanout FROM PUBLIC;
GRANT USAGE ON SCHEMA pgfanout TO PUBLIC;
REVOKE ALL ON pgfanout.changes, pgfanout.tracked, pgfanout.publisher_state FROM PUBLIC;
GRANT INSERT (schema_name, table_name, op, new_row, old_key, json_nulls, new_text, old_text, new_json) ON pgfanout.changes TO PUBLIC;
GRANT SELECT ON pgfanout.tracked, pgfanout.publisher_state TO PUBLIC;
REVOKE ALL ON SEQUENCE pgfanout.publisher_idle FROM PUBLIC;
GRANT SELECT ON SEQUENCE pgfanout.publisher_idle TO PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC', pg_get_serial_sequence('pgfanout.changes', 'id'));
    EXECUTE format('GRANT SELECT ON SEQUENCE %s TO PUBLIC', pg_get_serial_sequence('pgfanout.changes', 'id'));
END
$$;
REVOKE ALL ON FUNCTION pgfanout.truncate_in_force(bigint, text, text), pgfanout.supersede_changes(bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgfanout.truncate_in_force(bigint, text, text), pgfanout.supersede_changes(bigint, bigint) TO PUBLIC;
-- pgfanout.partition_truncates (logical mode) likewise: insert (the policy below decides
-- which rows) and read its id sequence; the installer's functions renew and delete rows.
REVOKE ALL ON pgfanout.partition_truncates FROM PUBLIC;
GRANT INSERT (root_schema, root_name, rel, op, old_key, old_text) ON pgfanout.partition_truncates TO PUBLIC;
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC', pg_get_serial_sequence('pgfanout.partition_truncates', 'id'));
    EXECUTE format('GRANT SELECT ON SEQUENCE %s TO PUBLIC', pg_get_serial_sequence('pgfanout.partition_truncates', 'id'));
END
$$;
REVOKE ALL ON FUNCTION pgfanout.truncate_marked(bigint, text, text), pgfanout.forget_partition_truncates(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgfanout.truncate_marked(bigint, text, text), pgfanout.forget_partition_truncates(bigint) TO PUBLIC;

ALTER TABLE pgfanout.changes ENABLE ROW LEVEL SECURITY;
DO $$
DECLARE
    p name;
BEGIN
    FOR p IN SELECT polname FROM pg_policy WHERE polrelid = 'pgfanout.changes'::regclass LOOP
        EXECUTE format('DROP POLICY %I ON pgfanout.changes', p);
    END LOOP;
END
$$;
CREATE POLICY pgfanout_capture ON pgfanout.changes FOR INSERT TO PUBLIC
    WITH CHECK (
        CASE WHEN has_schema_privilege(schema_name, 'USAGE')
             THEN has_table_privilege(to_regclass(format('%I.%I', schema_name, table_name)),
                                      CASE WHEN op = 'TRUNCATE' THEN 'TRUNCATE' ELSE 'INSERT, UPDATE, DELETE, TRUNCATE' END)
             ELSE false
        END
        OR pgfanout.may_capture_through(schema_name, table_name, op));
-- Who may read or delete is decided by the table's grants alone (the publisher's role).
CREATE POLICY pgfanout_read ON pgfanout.changes FOR SELECT TO PUBLIC USING (true);
CREATE POLICY pgfanout_ship ON pgfanout.changes FOR DELETE TO PUBLIC USING (true);

-- Row-level security of pgfanout.partition_truncates, whose rows the publisher ships as
-- changes of a partitioned table (root_schema.root_name) as it does the outbox's: a role
-- may write a row only if a TRUNCATE it may run would write it. rel must be in the tree
-- of that very table; a DELETE needs TRUNCATE on rel or on one of its ancestors (the
-- partition truncated, or a mid-level one or the root, whose TRUNCATE reaches it with
-- only their rights checked); a TRUNCATE needs TRUNCATE on the partitioned table itself.
-- A role that may truncate no part of a tracked table writes nothing of it here.
ALTER TABLE pgfanout.partition_truncates ENABLE ROW LEVEL SECURITY;
DO $$
DECLARE
    p name;
BEGIN
    FOR p IN SELECT polname FROM pg_policy WHERE polrelid = 'pgfanout.partition_truncates'::regclass LOOP
        EXECUTE format('DROP POLICY %I ON pgfanout.partition_truncates', p);
    END LOOP;
END
$$;
CREATE POLICY pgfanout_capture ON pgfanout.partition_truncates FOR INSERT TO PUBLIC
    WITH CHECK (
        EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = pg_partition_root(rel) AND c.relkind = 'p'
                  AND n.nspname = root_schema AND c.relname = root_name)
        AND CASE op
                WHEN 'DELETE' THEN has_table_privilege(rel, 'TRUNCATE')
                                   OR EXISTS (SELECT FROM pg_partition_ancestors(rel) a
                                              WHERE has_table_privilege(a.relid, 'TRUNCATE'))
                WHEN 'TRUNCATE' THEN pg_partition_root(rel) = rel::oid AND has_table_privilege(rel, 'TRUNCATE')
                ELSE false
            END);

-- Event triggers need a superuser. Without one the capture still works; after changing a
-- tracked table's primary key or renaming it, run pgfanout.track() on it again.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        IF EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'pgfanout_ddl') THEN
            DROP EVENT TRIGGER pgfanout_ddl;
        END IF;
        CREATE EVENT TRIGGER pgfanout_ddl ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'DROP TABLE', 'ALTER SCHEMA', 'DROP SCHEMA', 'DROP OWNED')
            EXECUTE FUNCTION pgfanout.on_ddl();
    ELSIF NOT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'pgfanout_ddl') THEN
        RAISE NOTICE 'pgfanout: not a superuser, so no event trigger: run pgfanout.track() again on a tracked table after changing its primary key or its name';
    END IF;
END
$$;

-- Re-running this file brings the triggers of every tracked table up to date too. A
-- table that can no longer be tracked keeps its capture as it was, with a warning. The
-- INSERT capture functions and views of tables whose triggers are current are made
-- again from this file's capture_insert. That locks no tracked table, but remaking a
-- view waits for the transactions that wrote through it, and the table's writers then
-- wait for this file to commit, as they do for its policies on the outbox.
DO $$
DECLARE
    s record;
    message text;
BEGIN
    PERFORM pgfanout.make_insert_capture(tg.tgrelid)
    FROM pgfanout.tracked k JOIN pg_trigger tg ON tg.tgrelid = k.relid
    WHERE tg.tgname = 'pgfanout_insert'
      AND tg.tgfoid = to_regprocedure(pgfanout.capture_function(k.relid) || '()');
    PERFORM pgfanout.drop_detached_truncate_triggers();
    FOR s IN SELECT * FROM pgfanout.stale_tracking(NULL) LOOP
        IF s.dropped THEN
            PERFORM pgfanout.forget_dropped(s.relid);
            CONTINUE;
        END IF;
        BEGIN
            PERFORM pgfanout.track(s.relid::regclass);
        EXCEPTION WHEN raise_exception THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RAISE WARNING '%', format('%s (its capture stays as it was; fix it, or SELECT pgfanout.untrack(%L))',
                                      message, s.relid::regclass::text);
        END;
    END LOOP;
END
$$;

COMMIT;

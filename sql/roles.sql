-- pgfanout's least-privilege roles (README "Security" explains each grant).
--
--   on the primary, after install.sql, as a superuser (or the database's owner):
--     psql -v ON_ERROR_STOP=1 -v side=primary -f sql/roles.sql
--   on each replica, as a superuser (or the owner of the replicated tables):
--     psql -v ON_ERROR_STOP=1 -v side=replica -v schemas=public,shop -f sql/roles.sql
--
-- Idempotent: creates the roles that are missing and grants, in the current database,
-- what its side needs. Run it again on the primary after pgfanout.track() of a new table
-- (the snapshot role reads the tracked tables), and on a replica after adding tables.
--
-- psql variables (-v name=value), all optional:
--   side          primary (default) or replica
--   publisher     the publisher's role                    (default pgfanout_publisher)
--   snapshot      the listener's --source role, primary   (default pgfanout_snapshot)
--   listener      the listener's --target role, replicas  (default pgfanout_listener)
--   installer     a non-superuser owner of pgfanout       (default pgfanout_installer)
--   schemas       replica: comma-separated schemas whose tables the listener applies
--                 changes to, or * for every schema but the system ones (default public)
--   logical       on: the publisher gets REPLICATION, which the logical capture needs
--                 (set_capture('logical'); README "Security" says what it gives away).
--                 Default off; off never takes it away again.
--   login         on: new roles get LOGIN. Default off: they are created NOLOGIN and you
--                 give LOGIN and a password (or certificate) yourself, e.g.
--                 ALTER ROLE pgfanout_publisher LOGIN PASSWORD '...'. Existing roles keep
--                 their attributes either way.
--
-- The installer role is an alternative to installing as a superuser: it may create schema
-- pgfanout in this database and then owns it (psql -c 'SET ROLE pgfanout_installer' -f
-- install.sql, or log in as it). Without a superuser there is no DDL event trigger, and
-- track() needs the installer to own the table (or be a member of its owner's role).

\if :{?side}
\else
\set side primary
\endif
\if :{?publisher}
\else
\set publisher pgfanout_publisher
\endif
\if :{?snapshot}
\else
\set snapshot pgfanout_snapshot
\endif
\if :{?listener}
\else
\set listener pgfanout_listener
\endif
\if :{?installer}
\else
\set installer pgfanout_installer
\endif
\if :{?schemas}
\else
\set schemas public
\endif
\if :{?login}
\else
\set login off
\endif
\if :{?logical}
\else
\set logical off
\endif

BEGIN;

-- The variables reach the DO blocks below as transaction-local settings.
SELECT set_config('pgfanout_roles.side', :'side', true) AS side,
       set_config('pgfanout_roles.publisher', :'publisher', true) AS publisher,
       set_config('pgfanout_roles.snapshot', :'snapshot', true) AS snapshot,
       set_config('pgfanout_roles.listener', :'listener', true) AS listener,
       set_config('pgfanout_roles.installer', :'installer', true) AS installer,
       set_config('pgfanout_roles.schemas', :'schemas', true) AS schemas,
       set_config('pgfanout_roles.login', :'login', true) AS login,
       set_config('pgfanout_roles.logical', :'logical', true) AS logical \gset roles_

DO $$
DECLARE
    side text := current_setting('pgfanout_roles.side');
    login boolean := current_setting('pgfanout_roles.login')::boolean;
    r text;
BEGIN
    IF side NOT IN ('primary', 'replica') THEN
        RAISE EXCEPTION 'roles.sql: side must be primary or replica, not %', side;
    END IF;
    -- None of them is a superuser, none may create roles or databases, none bypasses
    -- row-level security, none may replicate.
    FOREACH r IN ARRAY ARRAY[current_setting('pgfanout_roles.publisher'), current_setting('pgfanout_roles.snapshot'),
                             current_setting('pgfanout_roles.listener'), current_setting('pgfanout_roles.installer')] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                           r, CASE WHEN login THEN 'LOGIN' ELSE 'NOLOGIN' END);
        ELSIF login THEN
            EXECUTE format('ALTER ROLE %I LOGIN', r);
        END IF;
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), r);
    END LOOP;
END
$$;

-- The primary: the installer, the publisher, the snapshot reader.
DO $$
DECLARE
    publisher text := current_setting('pgfanout_roles.publisher');
    snapshot text := current_setting('pgfanout_roles.snapshot');
    installer text := current_setting('pgfanout_roles.installer');
    t record;
BEGIN
    IF current_setting('pgfanout_roles.side') <> 'primary' THEN
        RETURN;
    END IF;
    -- To create schema pgfanout (once it exists, its owner needs nothing more here).
    EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), installer);
    IF to_regclass('pgfanout.changes') IS NULL THEN
        RAISE NOTICE 'roles.sql: pgfanout is not installed in %: roles created, run install.sql and then this file again', current_database();
        RETURN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA pgfanout TO %I, %I', publisher, snapshot);
    -- Publisher: read the outbox and delete what the broker confirmed; flip the idle flag.
    -- Not the outbox's owner (README: what VACUUM by the publisher would cost).
    EXECUTE format('GRANT SELECT, DELETE ON pgfanout.changes TO %I', publisher);
    EXECUTE format('GRANT SELECT, UPDATE (idle) ON pgfanout.publisher_state TO %I', publisher);
    IF to_regclass('pgfanout.publisher_lease') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, UPDATE ON pgfanout.publisher_lease TO %I', publisher);
    END IF;
    -- Logical capture: the mode, the slot still to drain after a switch back (cleared by
    -- the publisher once it dropped it), and the position it shipped to.
    IF to_regclass('pgfanout.capture') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, UPDATE (slot_name) ON pgfanout.capture TO %I', publisher);
        EXECUTE format('GRANT SELECT, UPDATE ON pgfanout.logical_position TO %I', publisher);
        EXECUTE format('GRANT EXECUTE ON FUNCTION pgfanout.park(bigint, text, text, text, json, jsonb, timestamptz, jsonb, jsonb, jsonb) TO %I', publisher);
    END IF;
    -- Streaming a slot needs the REPLICATION attribute, which only a superuser gives.
    IF current_setting('pgfanout_roles.logical')::boolean THEN
        EXECUTE format('ALTER ROLE %I REPLICATION', publisher);
    END IF;
    -- Snapshot (listener --snapshot --source): the list of tracked tables and their rows.
    EXECUTE format('GRANT SELECT ON pgfanout.tracked TO %I', snapshot);
    FOR t IN SELECT relid, schema_name FROM pgfanout.tracked WHERE to_regclass(format('%I.%I', schema_name, table_name)) IS NOT NULL LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', t.schema_name, snapshot);
        EXECUTE format('GRANT SELECT ON %s TO %I', t.relid, snapshot);
    END LOOP;
END
$$;

-- A replica: the listener applies changes to the tables of the given schemas and keeps
-- its bookkeeping in a schema pgfanout of its own.
DO $$
DECLARE
    listener text := current_setting('pgfanout_roles.listener');
    wanted text := current_setting('pgfanout_roles.schemas');
    s name;
    owner regrole;
BEGIN
    IF current_setting('pgfanout_roles.side') <> 'replica' THEN
        RETURN;
    END IF;
    SELECT nspowner::regrole INTO owner FROM pg_namespace WHERE nspname = 'pgfanout';
    IF owner IS NULL THEN
        EXECUTE format('CREATE SCHEMA pgfanout AUTHORIZATION %I', listener);
    ELSIF owner::oid <> listener::regrole::oid THEN
        RAISE EXCEPTION 'roles.sql: schema pgfanout on this replica belongs to %, not to the listener %', owner, listener
            USING HINT = format('ALTER SCHEMA pgfanout OWNER TO %I (and its tables), or drop it: the listener recreates its bookkeeping.', listener);
    END IF;
    -- TEMP: for a listener that stages rows in temporary tables (PUBLIC has it by default).
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), listener);
    FOR s IN
        SELECT n.nspname FROM pg_namespace n
        WHERE n.nspname <> 'pgfanout' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
          AND (wanted = '*' OR n.nspname = ANY (string_to_array(replace(wanted, ' ', ''), ',')))
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, listener);
        -- SELECT: upserts read the conflicting row and deletes match keys.
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA %I TO %I', s, listener);
    END LOOP;
    -- Replica mode keeps the replica's own triggers and foreign-key checks quiet during
    -- apply. Only a superuser may grant it; without it the listener applies in origin
    -- mode (README "Security").
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT SET ON PARAMETER session_replication_role TO %I', listener);
    ELSE
        RAISE NOTICE 'roles.sql: not a superuser, so % gets no SET on session_replication_role: replica triggers and foreign keys will fire during apply', listener;
    END IF;
END
$$;

COMMIT;

#!/usr/bin/env python3
"""pgfanout against PostgreSQL's native logical replication, on the same servers, in one run.

Started by bench/run.sh, which installs dependencies, builds, starts the local servers and
passes their environment (PGFANOUT_TEST_PG, PGFANOUT_TEST_AMQP, PGFANOUT_RUN_DIR). See
bench/README.md for what each workload measures and how.

Layout: one primary database with tables fo_* (tracked by pgfanout), lr_* (in a publication)
and plain_cost (neither); replicas bench_fo1/bench_fo2 (one pgfanout listener each) and
bench_lr1/bench_lr2 (one subscription each). While pgfanout is measured the subscriptions are
disabled (their slots are advanced past the pgfanout traffic afterwards, outside any timed
window), and while native replication is measured pgfanout has nothing to do, so the two never
compete for the machine's cores.
"""

import argparse
import atexit
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgmini import Pg, PgError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
TICK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1

# The CPU that shipping costs the primary's machine (the broker and the replicas could be
# elsewhere): pgfanout's publisher, its PostgreSQL sessions and, in logical mode, the
# walsender that decodes for it; native replication's walsenders.
PRIMARY_SIDE = ("pgfanout-publisher", "pg: publisher's session", "pg: walsender (pgfanout)", "pg: walsenders (native)")

PRIMARY = "bench_primary"
FO_REPLICAS = ["bench_fo1", "bench_fo2"]
LR_REPLICAS = ["bench_lr1", "bench_lr2"]
# The fan-out series (--fanout): replica databases for up to max(N) replicas of each system,
# on table fo_fan (tracked) and lr_fan (publication bench_fan_pub). Native's subscriptions
# and slots are named as their databases (bench_lr%, so setup() clears them like the others).
FAN_MAX = 16
FAN_FO = [f"bench_fan_fo{i}" for i in range(1, FAN_MAX + 1)]
FAN_LR = [f"bench_lr_fan{i}" for i in range(1, FAN_MAX + 1)]
# Its components, by the keys of cpu_delta(); listeners are every pgfanout-*listener* key.
FAN_COMPONENTS = [
    ("writer", ("pg: writers' sessions",)),
    ("capture", ("pg: walsender (pgfanout)", "pg: walsenders (native)")),
    ("publisher", ("pgfanout-publisher", "pg: publisher's session")),
    ("broker", ("rabbitmq (beam)",)),
    ("listeners", ()),
    ("replica", ("pg: listeners' sessions", "pg: apply workers (native)", "pg: replica instance")),
]
# Replica databases (with --replica-run-dir they live in a PostgreSQL instance of their own).
REPLICA_DBS = set(FO_REPLICAS + LR_REPLICAS + FAN_FO + FAN_LR)
EXCHANGE = "pgfanout_bench"
# The cost run's "decoding" variant: PostgreSQL's own pg_recvlogical streams this slot of
# pgfanout's publication to /dev/null, the floor of any capture by logical decoding.
DECODING_SLOT = "bench_decoding"
# The cost run's variants, in the order of its alternation and its report.
COST_SYSTEMS = ("untracked", "capture", "decoding", "shipping", "pgfanout", "native")

ROW_SQL = ("'row ' || g || ' with a line of ordinary text in it', "
           "jsonb_build_object('n', g, 'tag', 'bench', 'list', jsonb_build_array(1, 2, 3)), now()")


def log(msg=""):
    print(msg, flush=True)


class BenchError(Exception):
    pass


def deadline_loop(timeout, what, interval=0.01):
    """Yields until the caller breaks; raises BenchError after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() > end:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- processes

def proc_cpu(pid):
    """utime+stime (and reaped children's) of a process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    return own, children, int(fields[1])  # fields[1] is ppid


def proc_mem(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) / 1024.0  # MiB
    except FileNotFoundError:
        pass
    return out


def fdatasync_rate(directory, seconds=1.0):
    path = os.path.join(directory, "bench_fsync_probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        n, block, end = 0, b"x" * 8192, time.monotonic() + seconds
        while time.monotonic() < end:
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            n += 1
        return n / seconds
    finally:
        os.close(fd)
        os.unlink(path)


def machine_cpu():
    """Busy and total CPU seconds of the whole machine so far (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICK


class Daemon:
    """A process we started (pgfanout's, or pg_recvlogical); stopped by its PID only. cpu_key
    is its line in the CPU tables: pgfanout-NAME, every publisher instance as one."""
    running = []

    def __init__(self, name, argv, logdir, cpu_key=None):
        self.name = name
        self.argv = argv
        self.cpu_key = cpu_key or ("pgfanout-publisher" if name.startswith("publisher") else f"pgfanout-{name}")
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.logf = open(self.log_path, "ab")
        self.log_start = self.logf.tell()  # a restart appends: wait_log reads this run's lines only
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        Daemon.running.append(self)

    def alive(self):
        return self.proc.poll() is None

    def cpu(self):
        c = proc_cpu(self.pid)
        return c[0] if c else 0.0

    def mem(self):
        return proc_mem(self.pid)

    def wait_log(self, pattern, timeout=60):
        rx = re.compile(pattern)
        for _ in deadline_loop(timeout, f"{self.name} to log /{pattern}/", 0.05):
            if not self.alive():
                raise BenchError(f"{self.name} exited ({self.proc.returncode}); see {self.log_path}")
            with open(self.log_path, errors="replace") as f:
                f.seek(self.log_start)
                if rx.search(f.read()):
                    return

    def stop(self, timeout=20):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.logf.close()
        if self in Daemon.running:
            Daemon.running.remove(self)

    @classmethod
    def stop_all(cls):
        for d in list(cls.running):
            try:
                d.stop()
            except Exception as e:  # cleanup must go on
                print(f"stopping {d.name}: {e}", file=sys.stderr)


# --------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.admin_conninfo = os.environ["PGFANOUT_TEST_PG"]
        self.amqp = os.environ["PGFANOUT_TEST_AMQP"]
        self.run_dir = os.environ["PGFANOUT_RUN_DIR"]
        self.port = re.search(r"port=(\d+)", self.admin_conninfo).group(1)
        self.bindir = args.bin
        self.work = tempfile.mkdtemp(prefix="pgfanout-bench-")
        self.logdir = args.log_dir or tempfile.mkdtemp(prefix="pgfanout-bench-logs.")
        os.makedirs(self.logdir, exist_ok=True)
        self.publisher = None
        self.decoder = None       # pg_recvlogical of the cost run's "decoding" variant
        self.listeners = []
        self.pub_pack = None
        self.capture = "trigger"  # pgfanout.set_capture() mode in force (switch_capture)
        self.slot = None          # its logical replication slot in logical mode
        self.results = {}       # (workload, system) -> dict
        self.footprint = []     # rows for the footprint table
        self.cpu_tables = []    # (title, wall, {component: seconds})
        self.per_change = []    # (title, changes, {component: seconds}) of the throughput runs
        self.pub_peak = {}      # (capture, pack) -> VmHWM MiB of that publisher instance
        self.listener_peak = {}  # listener name -> VmHWM MiB of its instances stopped so far (shipping)
        self.outbox_watch = None  # peaks of the outbox's size while a throughput run is watched
        self.changes_through_listeners = 0
        self.pg_postmaster, self.pgdata = self.read_postmaster_pid(self.run_dir)
        # --replica-run-dir: the replica databases are in a second instance (servers.sh start-pg).
        self.replica_port = self.replica_postmaster = None
        if args.replica_run_dir:
            self.replica_postmaster, _ = self.read_postmaster_pid(args.replica_run_dir)
            env = open(os.path.join(args.replica_run_dir, "pg.env")).read()
            self.replica_port = re.search(r"PG_PORT=(\d+)", env).group(1)
        self.rabbit_pid = self.read_rabbit_pid()
        self.conns = {}

    # ----- connections and helpers
    def conninfo(self, db, app="bench", port=None):
        if port is None:
            port = self.replica_port if self.replica_port and db in REPLICA_DBS else self.port
        return f"host=127.0.0.1 port={port} user=postgres dbname={db} application_name={app}"

    def db(self, name):
        if name not in self.conns:
            self.conns[name] = Pg(self.conninfo(name))
        return self.conns[name]

    @staticmethod
    def read_postmaster_pid(run_dir):
        env = open(os.path.join(run_dir, "pg.env")).read()
        data = re.search(r"PGDATA_DIR=(\S+)", env).group(1).strip("'\"")
        with open(os.path.join(data, "postmaster.pid")) as f:
            return int(f.readline()), data

    def read_rabbit_pid(self):
        try:
            with open(os.path.join(self.run_dir, "rabbit", "rabbit.pid")) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def psql_file(self, db, path):
        subprocess.run([f"{PGBIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.conninfo(db), "-f", path],
                       check=True, timeout=120, stdout=subprocess.DEVNULL)

    # ----- machine
    def machine(self):
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        cpu = "?"
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        admin = Pg(self.admin_conninfo)
        pgv = admin.value("SHOW server_version")
        rmq = "?"
        try:
            out = subprocess.run([os.path.join(self.run_dir, "rabbitmqctl"), "-q", "status"], capture_output=True,
                                 text=True, timeout=60).stdout
            m = re.search(r"RabbitMQ version:\s*(\S+)", out)
            e = re.search(r"Erlang configuration:\s*Erlang/OTP\s*(\S+)", out)
            rmq = (m.group(1) if m else "?") + (f" (Erlang/OTP {e.group(1)})" if e else "")
        except subprocess.TimeoutExpired:
            pass
        fsync = admin.value("SHOW synchronous_commit")
        # The cost run reports the WAL flushes' own time (pg_stat_wal.wal_sync_time); the
        # setting stays on in this server's postgresql.auto.conf.
        admin.query("ALTER SYSTEM SET track_wal_io_timing = on")
        admin.query("SELECT pg_reload_conf()")
        for _ in deadline_loop(10, "track_wal_io_timing to take effect", 0.05):
            if admin.value("SHOW track_wal_io_timing") == "on":
                break
        log(f"machine: {NPROC} cores ({cpu}), {mem_kb / 1048576:.1f} GiB RAM, kernel {os.uname().release}")
        log(f"servers: PostgreSQL {pgv} (synchronous_commit={fsync}, shared_buffers="
            f"{admin.value('SHOW shared_buffers')}, track_wal_io_timing={admin.value('SHOW track_wal_io_timing')}), "
            f"RabbitMQ {rmq}; all on 127.0.0.1")
        try:  # what the broker was started with (servers.sh records it), not this process's environment
            erl = re.search(r"^PGFANOUT_RABBIT_ERL_ARGS='([^']*)'$",
                            open(os.path.join(self.run_dir, "rabbit", "env")).read(), re.M)
            extra = erl.group(1).strip() if erl else ""
        except FileNotFoundError:
            extra = ""
        if extra:
            log(f"RabbitMQ started with extra Erlang arguments: {extra}")
        log("replicas: " + (f"in a second PostgreSQL instance (port {self.replica_port}), as on another "
                            "server but on the same cores and disk" if self.replica_port else
                            "databases in the primary's PostgreSQL instance (as native's apply workers are)"))
        admin.close()
        log(f"disk: {fdatasync_rate(self.pgdata):,.0f} fdatasync/s of one 8 kB write in the PostgreSQL data "
            f"directory (bounds single-row commits per WAL flush)")
        log(f"load average before the run: {' '.join(open('/proc/loadavg').read().split()[:3])} "
            f"(other work on this machine competes with the bench)")

    # ----- setup
    def setup(self):
        admin = Pg(self.admin_conninfo)
        admin.query("SET client_min_messages = warning")
        radmin = Pg(self.conninfo("postgres", port=self.replica_port)) if self.replica_port else admin
        radmin.query("SET client_min_messages = warning")
        # Leftovers of an earlier run on reused servers: subscriptions hold their slots.
        existing = {r[0] for r in radmin.query("SELECT datname FROM pg_database")}
        for r in LR_REPLICAS + FAN_LR:
            if r in existing:
                with Pg(self.conninfo(r)) as c:
                    if c.value(f"SELECT count(*) FROM pg_subscription WHERE subname = '{r}'") != "0":
                        c.query(f"ALTER SUBSCRIPTION {r} DISABLE")
                        c.query(f"ALTER SUBSCRIPTION {r} SET (slot_name = NONE)")
                        c.query(f"DROP SUBSCRIPTION {r}")
        # A pg_recvlogical of a killed run may still stream the decoding variant's slot.
        admin.query("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE slot_name = $1 AND active", DECODING_SLOT)
        for _ in deadline_loop(60, "old replication slots to be released", 0.1):
            if admin.value("SELECT count(*) FROM pg_replication_slots WHERE active AND "
                           "(slot_name LIKE 'bench_lr%' OR slot_name = $1)", DECODING_SLOT) == "0":
                break
        admin.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name LIKE 'bench_lr%' OR slot_name = $1", DECODING_SLOT)
        fan = max(self.args.fanout_ns) if self.args.fanout_ns else 0
        for d in [PRIMARY] + FO_REPLICAS + LR_REPLICAS + FAN_FO[:fan] + FAN_LR[:fan]:
            a = radmin if d in REPLICA_DBS else admin
            a.query(f"DROP DATABASE IF EXISTS {d} WITH (FORCE)")
            a.query(f"CREATE DATABASE {d}")
        if radmin is not admin:
            radmin.close()
        admin.close()

        def tables(prefix, replica):
            arrived = ", arrived timestamptz DEFAULT clock_timestamp()" if replica else ""
            return (f"CREATE TABLE {prefix}_bulk (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz);"
                    f"CREATE TABLE {prefix}_upd (id bigint PRIMARY KEY, n bigint NOT NULL, t text, j jsonb, ts timestamptz);"
                    f"CREATE TABLE {prefix}_lat (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz{arrived});"
                    f"CREATE TABLE {prefix}_cost (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz);")

        p = self.db(PRIMARY)
        p.query(tables("fo", False) + tables("lr", False) +
                "CREATE TABLE plain_cost (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz);"
                "CREATE SEQUENCE fo_cost_seq; CREATE SEQUENCE lr_cost_seq; CREATE SEQUENCE plain_cost_seq;")
        self.psql_file(PRIMARY, os.path.join(ROOT, "sql", "install.sql"))
        for t in ("fo_bulk", "fo_upd", "fo_lat", "fo_cost"):
            p.query(f"SELECT pgfanout.track('{t}')")
        p.query("CREATE PUBLICATION bench_pub FOR TABLE lr_bulk, lr_upd, lr_lat, lr_cost")
        for r in FO_REPLICAS:
            self.db(r).query(tables("fo", True))
        for r in LR_REPLICAS:
            self.db(r).query(tables("lr", True))
            # Same-cluster subscription: the slot must exist before CREATE SUBSCRIPTION, which
            # would otherwise wait for its own transaction to create it.
            p.query(f"SELECT pg_create_logical_replication_slot('{r}', 'pgoutput')")
            self.db(r).query(f"CREATE SUBSCRIPTION {r} CONNECTION '{self.conninfo(PRIMARY, r)}' "
                             f"PUBLICATION bench_pub WITH (create_slot = false, slot_name = '{r}', "
                             f"copy_data = false, enabled = false)")
        self.native_on = False
        if fan:
            self.setup_fanout(fan)
        if not self.args.standard_listeners:
            return  # --only fanout: the two listeners of the other workloads would bind every table
        for i, r in enumerate(FO_REPLICAS):
            d = Daemon(f"listener{i + 1}", [os.path.join(self.bindir, "pgfanout-listener"),
                                            "--target", self.conninfo(r, "pgfanout-listener"),
                                            "--queue", f"bench_{r}", "--amqp", self.amqp,
                                            "--exchange", EXCHANGE,
                                            # not fo_fan: the fan-out series has its own listeners
                                            "--tables", "public.fo_bulk,public.fo_upd,public.fo_lat,public.fo_cost"],
                       self.logdir)
            self.listeners.append(d)
        for d in self.listeners:
            d.wait_log(r"consuming from")

    def start_publisher(self, pack):
        if self.publisher and self.pub_pack == pack:
            return
        self.stop_publisher()
        self.publisher = Daemon(f"publisher-{self.capture}-pack{pack}",
                                [os.path.join(self.bindir, "pgfanout-publisher"),
                                 "--source", self.conninfo(PRIMARY, "pgfanout-publisher"),
                                 "--amqp", self.amqp, "--exchange", EXCHANGE, "--pack", str(pack)], self.logdir)
        self.pub_pack = pack
        self.pub_capture = self.capture
        if self.capture == "trigger":
            self.publisher.wait_log(r"outbox holds")
        else:
            self.publisher.wait_log(r"streaming replication slot \S+ \(shipped up to")
            self.wait_slot(True)

    def note_publisher_peak(self):
        if self.publisher:
            hwm = self.publisher.mem().get("VmHWM", 0)
            key = (self.pub_capture, self.pub_pack)
            self.pub_peak[key] = max(self.pub_peak.get(key, 0), hwm)

    def stop_publisher(self):
        if self.publisher:
            self.note_publisher_peak()
            self.publisher.stop()
            self.publisher = None
            if self.capture == "logical":
                self.wait_slot(False)  # its walsender ends after the publisher

    # ----- pgfanout's capture mode (README, "Capture modes")
    def wait_slot(self, active, timeout=60, slot=None, reader=None):
        """Until a slot (pgfanout's by default) is streamed by a walsender (active) or released;
        waiting for it in use, fails if its reader (the publisher by default) has exited."""
        slot = slot or self.slot
        reader = reader or self.publisher
        want = "t" if active else "f"
        for _ in deadline_loop(timeout, f"replication slot {slot} to be {'in use' if active else 'released'}", 0.05):
            if self.db(PRIMARY).value("SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot) == want:
                return
            if active and reader and not reader.alive():
                raise BenchError(f"{reader.name} exited; see {reader.log_path}")

    def switch_capture(self, mode, pack, timeout=None):
        """set_capture(mode) with the publisher running, and waits until it has followed:
        to logical, until it streams the new slot; back to trigger, until it has shipped what
        the slot held and dropped it (pgfanout.capture.slot_name is then NULL)."""
        p = self.db(PRIMARY)
        if p.value("SELECT mode FROM pgfanout.capture") == mode and self.capture == mode:
            return
        self.native(False)
        self.start_publisher(pack)
        t0 = time.monotonic()
        p.query(f"SELECT pgfanout.set_capture('{mode}')")
        if mode == "logical":
            self.slot = p.value("SELECT slot_name FROM pgfanout.capture")
            self.wait_slot(True)
        else:
            for _ in deadline_loop(timeout or self.args.timeout, "the publisher to ship and drop the slot "
                                   f"{self.slot} after set_capture('trigger')", 0.05):
                if p.value("SELECT slot_name IS NULL FROM pgfanout.capture") == "t":
                    break
                if not self.publisher.alive():
                    raise BenchError(f"the publisher exited; see {self.publisher.log_path}")
            self.slot = None
        self.capture = mode
        log(f"capture: set_capture('{mode}'); the publisher followed in {time.monotonic() - t0:.1f} s")

    def wait_shipped(self, timeout=300):
        """Until the publisher has shipped every change committed so far: the outbox is empty
        and, in logical mode, the slot is confirmed up to the WAL flushed now (the publisher
        confirms only what the broker confirmed, and an idle stream's keepalives)."""
        self.wait_outbox_empty(timeout)
        if self.capture != "logical" or not self.publisher:
            return
        p = self.db(PRIMARY)
        target = p.value("SELECT pg_current_wal_flush_lsn()")
        for _ in deadline_loop(timeout, f"replication slot {self.slot} to be confirmed up to {target}", 0.02):
            if p.value("SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots "
                       "WHERE slot_name = $2", target, self.slot) == "t":
                return

    def quiesce_publisher(self):
        """Logical mode: ship everything and stop the publisher, so that its walsender does
        not decode what the next run writes (untracked or native traffic: the slot is moved
        past it before pgfanout runs again, see reset)."""
        if self.capture == "logical" and self.publisher:
            self.wait_shipped()
            self.stop_publisher()

    def skip_slot(self):
        """Logical mode, publisher stopped, nothing tracked left to ship: moves the slot past
        the WAL written since (resets, untracked and native runs), as native()'s slots are."""
        self.db(PRIMARY).query(f"SELECT pg_replication_slot_advance('{self.slot}', pg_current_wal_flush_lsn())")

    # ----- native replication on/off
    def slots_active(self):
        rows = self.db(PRIMARY).query("SELECT slot_name, active FROM pg_replication_slots ORDER BY 1")
        return {r[0]: r[1] == "t" for r in rows}

    def native(self, on):
        p = self.db(PRIMARY)
        if on == self.native_on:
            return
        if on:
            self.quiesce_publisher()
            # Skip the WAL written while the subscriptions were off (pgfanout's workloads,
            # resets): it holds nothing the subscribers need.
            for r in LR_REPLICAS:
                p.query(f"SELECT pg_replication_slot_advance('{r}', pg_current_wal_lsn())")
            for r in LR_REPLICAS:
                self.db(r).query(f"ALTER SUBSCRIPTION {r} ENABLE")
            for _ in deadline_loop(60, "the subscriptions to start streaming", 0.05):
                n = p.value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' "
                            "AND application_name LIKE 'bench_lr%'")
                if int(n) == len(LR_REPLICAS):
                    break
        else:
            for r in LR_REPLICAS:
                self.db(r).query(f"ALTER SUBSCRIPTION {r} DISABLE")
            for _ in deadline_loop(60, "the replication slots to be released", 0.05):
                if not any(self.slots_active().values()):
                    break
        self.native_on = on

    # ----- resets: same starting state for every timed run
    def reset(self, prefix, table, prefill=0, replicas=None):
        """Empties table `{prefix}_{table}` on the primary and its replicas without capturing
        or replicating it, then prefills ids 0..prefill identically everywhere."""
        self.wait_shipped()
        was_on = self.native_on
        self.native(False)
        # Logical mode: TRUNCATE and INSERT are decoded whatever session_replication_role
        # says, so the publisher stops and its slot is moved past them (as the subscriptions'
        # are); the caller starts the publisher again.
        skip = prefix == "fo" and self.capture == "logical"
        if skip:
            self.quiesce_publisher()
        name = f"{prefix}_{table}"
        if replicas is None:
            replicas = FO_REPLICAS if prefix == "fo" else LR_REPLICAS if prefix == "lr" else []
        for d in [PRIMARY] + replicas:
            c = self.db(d)
            c.query("SET session_replication_role = replica")
            c.query(f"TRUNCATE {name}")
            if prefill:
                n = "0, " if table == "upd" else ""
                c.query(f"INSERT INTO {name} SELECT g, {n}'prefilled row ' || g, '{{\"n\": 0}}', now() "
                        f"FROM generate_series(0, {prefill}) g")
            c.query("SET session_replication_role = origin")
            c.query(f"VACUUM ANALYZE {name}")
        self.db(PRIMARY).query("VACUUM ANALYZE pgfanout.changes")
        self.db(PRIMARY).query("CHECKPOINT")
        if self.replica_port:  # the replicas' own instance (--replica-run-dir)
            self.db(FO_REPLICAS[0]).query("CHECKPOINT")
        if skip:
            self.skip_slot()
        if was_on:
            self.native(True)

    # ----- the outbox's size
    def outbox_size(self):
        """pgfanout.changes on disk (heap, indexes, TOAST) in MiB, and its dead tuples as the
        statistics show them (they lag the publisher's deletes by a second or so). While a
        run is watched, also keeps the peaks."""
        size, dead = self.db(PRIMARY).value(
            "SELECT pg_total_relation_size(relid) || ' ' || n_dead_tup FROM pg_stat_user_tables "
            "WHERE relid = 'pgfanout.changes'::regclass").split()
        size, dead = int(size) / 1048576, int(dead)
        w = self.outbox_watch
        if w:
            w["peak_size"], w["peak_dead"] = max(w["peak_size"], size), max(w["peak_dead"], dead)
            w["next"] = time.monotonic() + 0.5
        return size, dead

    def watch_outbox(self):
        """Starts keeping the outbox's peaks (sampled by the polling loops, see poll_outbox)."""
        self.outbox_watch = {"peak_size": 0.0, "peak_dead": 0, "next": 0.0}
        self.outbox_watch["before"] = self.outbox_size()[0]

    def poll_outbox(self):
        """A sample every 0.5 s from the loops that wait anyway, while a run is watched."""
        if self.outbox_watch and time.monotonic() >= self.outbox_watch["next"]:
            self.outbox_size()

    def end_outbox_watch(self):
        """The outbox after the run and its peaks over the run; ends the watch."""
        time.sleep(1.2)  # the publisher's session reports its deletes within a second of going idle
        size, dead = self.outbox_size()
        w, self.outbox_watch = self.outbox_watch, None
        return {"before": w["before"], "size": size, "dead": dead, "peak_size": w["peak_size"],
                "peak_dead": w["peak_dead"]}

    def wait_outbox_empty(self, timeout=300):
        for _ in deadline_loop(timeout, "the outbox to drain", 0.05):
            if self.db(PRIMARY).value("SELECT NOT EXISTS (SELECT FROM pgfanout.changes)") == "t":
                return

    # ----- CPU accounting per component
    def pg_classes(self):
        # A walsender is pgfanout's when it streams pgfanout's slot (logical capture), native
        # replication's when it streams a subscription's.
        rows = self.db(PRIMARY).query(
            "SELECT a.pid, a.backend_type, coalesce(a.application_name, ''), coalesce(s.slot_name, '') "
            "FROM pg_stat_activity a LEFT JOIN pg_replication_slots s ON s.active_pid = a.pid")
        out = {}
        for pid, btype, app, slot in rows:
            if btype == "client backend":
                if app.startswith("pgfanout-publisher"):
                    cls = "pg: publisher's session"
                elif app.startswith("pgfanout-listener"):
                    cls = "pg: listeners' sessions"
                elif app == "bench":
                    cls = "pg: bench's own queries"
                else:
                    cls = "pg: writers' sessions"
            elif btype == "walsender":
                pgfanout = slot.startswith("pgfanout_") or (not slot and app.startswith("pgfanout"))
                if slot == DECODING_SLOT or app == "bench-decoding":
                    cls = "pg: walsender (pg_recvlogical)"
                else:
                    cls = "pg: walsender (pgfanout)" if pgfanout else "pg: walsenders (native)"
            elif btype == "logical replication worker":
                cls = "pg: apply workers (native)"
            elif btype.startswith("autovacuum"):
                cls = "pg: autovacuum"
            else:
                cls = "pg: wal writer, checkpointer, bgwriter"
            out[int(pid)] = cls
        return out

    def cpu_snapshot(self):
        snap = {"t": time.monotonic(), "daemons": {}, "cpu_keys": {}, "pg": {}, "classes": self.pg_classes()}
        for d in Daemon.running:
            snap["daemons"][d.name] = d.cpu()
            snap["cpu_keys"][d.name] = d.cpu_key
        if self.rabbit_pid:
            c = proc_cpu(self.rabbit_pid)
            snap["rabbit"] = (c[0] + c[1]) if c else 0.0
        pm = proc_cpu(self.pg_postmaster)
        snap["pm"] = pm
        # The replica instance (--replica-run-dir): its processes and those that ended.
        snap["rpg"] = {}
        snap["rpm"] = proc_cpu(self.replica_postmaster) if self.replica_postmaster else None
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            c = proc_cpu(int(pid))
            if c and c[2] == self.pg_postmaster:
                snap["pg"][int(pid)] = c[0]
            elif c and self.replica_postmaster and c[2] == self.replica_postmaster:
                snap["rpg"][int(pid)] = c[0]
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        snap["machine"] = machine_cpu()
        snap["clients"] = ru.ru_utime + ru.ru_stime
        snap["self"] = me.ru_utime + me.ru_stime
        return snap

    def cpu_delta(self, a, b):
        out = {}
        for name, v in b["daemons"].items():
            if name in a["daemons"]:
                key = b["cpu_keys"][name]
                out[key] = out.get(key, 0) + v - a["daemons"][name]
        if "rabbit" in b:
            out["rabbitmq (beam)"] = b["rabbit"] - a["rabbit"]
        classes = dict(a["classes"])
        classes.update(b["classes"])
        exited_before = 0.0
        for pid, v in b["pg"].items():
            cls = classes.get(pid, "pg: other")
            out[cls] = out.get(cls, 0) + v - a["pg"].get(pid, 0.0)
        for pid, v in a["pg"].items():
            if pid not in b["pg"]:
                exited_before += v
        # Backends that ended in the window (pgbench's) are in the postmaster's children time.
        exited = (b["pm"][1] - a["pm"][1]) - exited_before
        out["pg: writers' sessions"] = out.get("pg: writers' sessions", 0) + max(exited, 0)
        out["pg: postmaster"] = b["pm"][0] - a["pm"][0]
        if a.get("rpm") and b.get("rpm"):
            r = (b["rpm"][0] + b["rpm"][1]) - (a["rpm"][0] + a["rpm"][1])
            r += sum(v - a["rpg"].get(pid, 0.0) for pid, v in b["rpg"].items())
            r -= sum(v for pid, v in a["rpg"].items() if pid not in b["rpg"])
            out["pg: replica instance"] = r
        out["pgbench / bench driver"] = (b["clients"] - a["clients"]) + (b["self"] - a["self"])
        ours = sum(out.values())
        out["(processes not of this bench)"] = max(0.0, (b["machine"] - a["machine"]) - ours)
        return {k: v for k, v in out.items() if v > 0.005}

    def record_cpu(self, title, a, b, changes=None):
        wall = b["t"] - a["t"]
        delta = self.cpu_delta(a, b)
        self.cpu_tables.append((title, wall, delta))
        if changes:
            self.per_change.append((title, changes, delta))
        return delta

    def footprint_row(self, title, changes, a, b):
        row = {"title": title, "changes": changes}
        pub = [n for n in b["daemons"] if n.startswith("publisher")]
        row["publisher"] = sum(b["daemons"][n] - a["daemons"].get(n, 0.0) for n in pub)
        for i, d in enumerate(self.listeners):
            row[f"listener{i + 1}"] = b["daemons"][d.name] - a["daemons"][d.name]
        return row

    def record_footprint(self, title, changes, a, b, outbox=None):
        row = self.footprint_row(title, changes, a, b)
        row["outbox"] = outbox
        self.footprint.append(row)
        self.changes_through_listeners += changes

    # ----- waiting for replicas
    def wait_rows(self, dbs, sql_done, timeout, interval=0.01):
        """Polls each db with sql_done (returns 't' when complete); returns arrival times."""
        done = {}
        conns = {d: self.db(d) for d in dbs}
        for _ in deadline_loop(timeout, f"{', '.join(dbs)} to converge", interval):
            for d in dbs:
                if d not in done and conns[d].value(sql_done) == "t":
                    done[d] = time.monotonic()
            if len(done) == len(dbs):
                return done
            self.poll_outbox()

    # ----- workloads
    def bulk(self, system, pack=None, rows=None, sample_rss=False):
        rows = rows or self.args.rows
        txns = rows // 1000
        prefix = "fo" if system == "pgfanout" else "lr"
        replicas = FO_REPLICAS if prefix == "fo" else LR_REPLICAS
        t = f"{prefix}_bulk"
        self.reset(prefix, "bulk")
        if prefix == "fo":
            self.native(False)
            self.start_publisher(pack)
        else:
            self.native(True)
        label = f"pgfanout {self.capture} --pack {pack}" if prefix == "fo" else "native LR"
        if prefix == "fo":
            self.watch_outbox()
        snap0 = self.cpu_snapshot()
        writer = Pg(self.conninfo(PRIMARY, "bench-writer"))
        t0 = time.monotonic()
        if sample_rss:
            samples = []
            step = 100_000 // 1000
            for start in range(0, txns, step):
                writer.query(self.bulk_sql(t, start, min(start + step, txns)))
                # Do not run ahead of the chain by more than a step, so what is sampled is
                # the RSS at that volume, not the RSS of a growing backlog.
                done_id = min(start + step, txns) * 1000
                self.wait_rows(replicas, f"SELECT EXISTS (SELECT FROM {t} WHERE id = {done_id})", self.args.timeout)
                samples.append((done_id, {d.name: d.mem() for d in [self.publisher] + self.listeners},
                                self.outbox_size()))
            t_written = time.monotonic()
        else:
            writer.query(self.bulk_sql(t, 0, txns))
            t_written = time.monotonic()
        writer.close()
        arrived = self.wait_rows(replicas, f"SELECT EXISTS (SELECT FROM {t} WHERE id = {txns * 1000})", self.args.timeout)
        t1 = max(arrived.values())
        snap1 = self.cpu_snapshot()
        for r in replicas:
            n = int(self.db(r).value(f"SELECT count(*) FROM {t}"))
            if n != txns * 1000:
                raise BenchError(f"{r}.{t} holds {n} rows, expected {txns * 1000}")
        res = {"rate": rows / (t1 - t0), "seconds": t1 - t0, "write_seconds": t_written - t0,
               "lag": t1 - t_written}
        log(f"  bulk {label:<28} {rows:>9,} rows: {res['rate']:>9,.0f} rows/s end to end "
            f"({res['seconds']:.2f} s; the primary took {res['write_seconds']:.2f} s to write them; "
            f"last replica {res['lag']:.2f} s behind)")
        d = self.record_cpu(f"bulk, {label}, {rows:,} rows", snap0, snap1, rows)
        res["primary_us"] = sum(d.get(k, 0) for k in PRIMARY_SIDE) / rows * 1e6
        if prefix == "fo":
            res["outbox"] = self.end_outbox_watch()
            log_outbox(res["outbox"])
            self.record_footprint(f"bulk {self.capture} --pack {pack}", rows, snap0, snap1, res["outbox"])
        if sample_rss:
            res["rss_samples"] = samples
        return res

    @staticmethod
    def bulk_sql(table, first_txn, end_txn):
        return (f"DO $$ BEGIN FOR b IN {first_txn}..{end_txn - 1} LOOP "
                f"INSERT INTO {table} SELECT g, {ROW_SQL} FROM generate_series(b * 1000 + 1, b * 1000 + 1000) g; "
                f"COMMIT; END LOOP; END $$")

    # ----- the fan-out series (--fanout): N replicas of each system, bulk workload
    def setup_fanout(self, n):
        p = self.db(PRIMARY)
        ddl = "CREATE TABLE {}_fan (id bigint PRIMARY KEY, t text, j jsonb, ts timestamptz)"
        p.query(ddl.format("fo") + ";" + ddl.format("lr"))
        p.query("SELECT pgfanout.track('fo_fan')")
        p.query("CREATE PUBLICATION bench_fan_pub FOR TABLE lr_fan")
        for r in FAN_FO[:n]:
            self.db(r).query(ddl.format("fo"))
        for r in FAN_LR[:n]:
            self.db(r).query(ddl.format("lr"))
            p.query(f"SELECT pg_create_logical_replication_slot('{r}', 'pgoutput')")
            self.db(r).query(f"CREATE SUBSCRIPTION {r} CONNECTION '{self.conninfo(PRIMARY, r)}' "
                             f"PUBLICATION bench_fan_pub WITH (create_slot = false, slot_name = '{r}', "
                             f"copy_data = false, enabled = false)")

    def fan_listeners(self, n):
        """Starts one listener per replica database, each on its own queue bound to fo_fan only."""
        started = []
        for i, r in enumerate(FAN_FO[:n]):
            started.append(Daemon(f"fanlistener{i + 1}", [
                os.path.join(self.bindir, "pgfanout-listener"), "--target", self.conninfo(r, "pgfanout-listener"),
                "--queue", f"bench_fan{i + 1}", "--amqp", self.amqp, "--exchange", EXCHANGE,
                "--tables", "public.fo_fan"], self.logdir))
        for d in started:
            d.wait_log(r"consuming from")
        return started

    def drop_fan_listeners(self, started):
        """Stops them and deletes their queues, so that a later run with fewer replicas does
        not fill (and pay the broker for) queues nobody reads."""
        for d in started:
            d.stop()
        ctl = os.path.join(self.run_dir, "rabbitmqctl")
        procs = [subprocess.Popen([ctl, "-q", "delete_queue", f"bench_fan{i + 1}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in range(len(started))]
        for pr in procs:
            if pr.wait(120) != 0:
                raise BenchError(f"rabbitmqctl delete_queue failed ({pr.args[-1]})")

    def fan_native(self, n, on):
        p = self.db(PRIMARY)
        subs = FAN_LR[:n]
        if on:
            for r in subs:  # skip the WAL written while they were off, as native() does
                p.query(f"SELECT pg_replication_slot_advance('{r}', pg_current_wal_lsn())")
            for r in subs:
                self.db(r).query(f"ALTER SUBSCRIPTION {r} ENABLE")
            for _ in deadline_loop(60, f"{n} fan-out subscriptions to start streaming", 0.05):
                if int(p.value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' "
                               "AND application_name LIKE 'bench_lr_fan%'")) == n:
                    break
        else:
            for r in subs:
                self.db(r).query(f"ALTER SUBSCRIPTION {r} DISABLE")
            for _ in deadline_loop(60, "the fan-out slots to be released", 0.05):
                if p.value("SELECT count(*) FROM pg_replication_slots WHERE active "
                           "AND slot_name LIKE 'bench_lr_fan%'") == "0":
                    break

    def fanout(self, system, n, pack=None):
        """The bulk workload (--fanout-rows in 1,000-row transactions) delivered to n replicas:
        rows/s until the last replica holds every row, CPU per change per component."""
        rows = self.args.fanout_rows
        txns = rows // 1000
        pgf = system == "pgfanout"
        prefix = "fo" if pgf else "lr"
        replicas = (FAN_FO if pgf else FAN_LR)[:n]
        t = f"{prefix}_fan"
        self.native(False)
        self.reset(prefix, "fan", replicas=replicas)
        started = []
        try:
            if pgf:
                started = self.fan_listeners(n)
                self.start_publisher(pack)
            else:
                self.quiesce_publisher()  # logical mode: its walsender would decode lr_fan too
                self.fan_native(n, True)
            label = f"pgfanout {self.capture}" if pgf else "native LR"
            load = " ".join(open("/proc/loadavg").read().split()[:3])
            snap0 = self.cpu_snapshot()
            writer = Pg(self.conninfo(PRIMARY, "bench-writer"))
            t0 = time.monotonic()
            writer.query(self.bulk_sql(t, 0, txns))
            t_written = time.monotonic()
            writer.close()
            arrived = self.wait_rows(replicas, f"SELECT EXISTS (SELECT FROM {t} WHERE id = {txns * 1000})",
                                     self.args.timeout, interval=0.02)
            t1 = max(arrived.values())
            snap1 = self.cpu_snapshot()
            for r in replicas:
                got = int(self.db(r).value(f"SELECT count(*) FROM {t}"))
                if got != txns * 1000:
                    raise BenchError(f"{r}.{t} holds {got} rows, expected {txns * 1000}")
        finally:
            if pgf:
                self.drop_fan_listeners(started)
            else:
                self.fan_native(n, False)
        d = self.record_cpu(f"fan-out, {label}, {n} replica{'s' if n > 1 else ''}, {rows:,} rows", snap0, snap1)
        res = {"rate": rows / (t1 - t0), "seconds": t1 - t0, "write_seconds": t_written - t0,
               "lag": t1 - t_written, "load": load, "us": {},
               "others": d.get("(processes not of this bench)", 0) / ((snap1["t"] - snap0["t"]) * NPROC) * 100}
        for name, keys in FAN_COMPONENTS:
            secs = (sum(v for k, v in d.items() if k.startswith("pgfanout-") and "listener" in k)
                    if name == "listeners" else sum(d.get(k, 0) for k in keys))
            res["us"][name] = secs / rows * 1e6
        log(f"  fan-out {label:<17} N={n:<2} {rows:>8,} rows: {res['rate']:>9,.0f} rows/s to all "
            f"({res['seconds']:.2f} s; written in {res['write_seconds']:.2f} s; last replica {res['lag']:.2f} s "
            f"behind; load {load})")
        return res

    def pgbench(self, script_text, db, clients, *, transactions=None, seconds=None, name="script"):
        path = os.path.join(self.work, f"{name}.sql")
        with open(path, "w") as f:
            f.write(script_text)
        cmd = [f"{PGBIN}/pgbench", "-n", "-c", str(clients), "-j", str(min(clients, NPROC)), "-f", path]
        cmd += ["-t", str(transactions)] if transactions else ["-T", str(seconds)]
        cmd.append(self.conninfo(db, "pgbench"))
        limit = (seconds or 0) + self.args.timeout
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        if out.returncode != 0:
            raise BenchError(f"pgbench failed: {out.stderr.strip()[-500:]}")
        m = re.search(r"^tps = ([0-9.]+)", out.stdout, re.M)
        return float(m.group(1)) if m else None

    def updates(self, system, pack=None):
        n = self.args.updates
        prefix = "fo" if system == "pgfanout" else "lr"
        replicas = FO_REPLICAS if prefix == "fo" else LR_REPLICAS
        t = f"{prefix}_upd"
        self.reset(prefix, "upd", prefill=self.args.update_rows)
        if prefix == "fo":
            self.native(False)
            self.start_publisher(pack)
        else:
            self.native(True)
        label = f"pgfanout {self.capture} --pack {pack}" if prefix == "fo" else "native LR"
        script = (f"\\set id random(1, {self.args.update_rows})\n"
                  f"UPDATE {t} SET n = n + 1, t = 'updated ' || :id, ts = now() WHERE id = :id;\n")
        clients = 4
        if prefix == "fo":
            self.watch_outbox()
        snap0 = self.cpu_snapshot()
        t0 = time.monotonic()
        tps = self.pgbench(script, PRIMARY, clients, transactions=n // clients, name=f"upd_{prefix}")
        t_written = time.monotonic()
        # A sentinel after every update committed: its change is shipped and applied after
        # all of theirs (outbox id order / commit order), so its arrival marks convergence;
        # sum(n) then confirms it.
        self.db(PRIMARY).query(f"UPDATE {t} SET n = n + 1 WHERE id = 0")
        arrived = self.wait_rows(replicas, f"SELECT n = 1 FROM {t} WHERE id = 0", self.args.timeout)
        expected = (n // clients) * clients + 1
        for r in replicas:
            for _ in deadline_loop(self.args.timeout, f"{r}.{t} to hold every update", 0.05):
                s = int(self.db(r).value(f"SELECT sum(n) FROM {t}"))
                if s == expected:
                    break
                arrived[r] = time.monotonic()
                self.poll_outbox()
        t1 = max(arrived.values())
        snap1 = self.cpu_snapshot()
        res = {"rate": n / (t1 - t0), "seconds": t1 - t0, "write_seconds": t_written - t0,
               "lag": t1 - t_written, "tps": tps}
        log(f"  updates {label:<25} {n:>9,} rows: {res['rate']:>9,.0f} rows/s end to end "
            f"({res['seconds']:.2f} s; pgbench alone {tps:,.0f} tps; last replica {res['lag']:.2f} s behind)")
        d = self.record_cpu(f"updates, {label}, {n:,} rows", snap0, snap1, n)
        res["primary_us"] = sum(d.get(k, 0) for k in PRIMARY_SIDE) / n * 1e6
        if prefix == "fo":
            res["outbox"] = self.end_outbox_watch()
            log_outbox(res["outbox"])
            self.record_footprint(f"updates {self.capture} --pack {pack}", n, snap0, snap1, res["outbox"])
        return res

    def cost(self, pack):
        """pgbench TPS untracked / tracked without the chain / tracked with the listeners stopped (shipping) /
        tracked / published (cost_variants). Each variant runs `rounds` times for cost_seconds / rounds,
        in the order A B C D E E D C B A ..., so that a neighbour's load that comes and goes during
        the section weighs on every variant alike."""
        rounds = max(1, self.args.cost_rounds)
        secs = max(2, round(self.args.cost_seconds / rounds))
        out = {}
        for op in ("insert", "update", "1,000-row insert"):
            # "capture": the tracked table with the publisher stopped (and the idle flag
            # false, so no NOTIFY): what the capture alone costs, the bound of the others.
            # Not for 1,000-row inserts, whose backlog would take long to drain.
            # "shipping": tracked, the publisher (and in logical mode its walsender) running, the
            # listeners stopped: the primary's side of the chain alone, as when the broker's
            # consumers and the replicas are on other machines.
            # "decoding" (logical mode): no pgfanout process running, PostgreSQL's own
            # pg_recvlogical streaming a slot of pgfanout's publication to /dev/null: what
            # logical decoding costs the writers whoever consumes it, the floor of "shipping".
            systems = self.cost_variants(op)
            done = {s: {"tx": 0.0, "secs": 0.0, "catch_up": [], "tps": [], "wal": 0, "flips": 0, "primary": [],
                        "syncs": 0, "sync_ms": 0.0} for s in systems}
            foot = None
            for r in range(rounds):
                for system in (systems if r % 2 == 0 else tuple(reversed(systems))):
                    tps, catch_up, foot_row, wal, flips, primary, syncs = self.cost_run(op, system, pack, secs)
                    d = done[system]
                    d["syncs"] += syncs[0]
                    d["sync_ms"] += syncs[1]
                    d["tx"] += tps * secs
                    d["secs"] += secs
                    d["tps"].append(tps)
                    d["wal"] += wal
                    d["flips"] += flips
                    if primary is not None:
                        d["primary"].append(primary)
                    if catch_up is not None:
                        d["catch_up"].append(catch_up)
                    if foot_row:
                        if foot is None:
                            foot = foot_row
                        else:
                            for k, v in foot_row.items():
                                if k != "title":
                                    foot[k] += v
            if foot:
                self.footprint.append(foot)
                self.changes_through_listeners += foot["changes"]
            for system in systems:
                d = done[system]
                tps = d["tx"] / d["secs"]
                cu = max(d["catch_up"]) if d["catch_up"] else None
                wal = d["wal"] / d["tx"] if d["tx"] else 0
                prim = statistics.mean(d["primary"]) * 1e6 if d["primary"] else None
                per_tx = d["syncs"] / d["tx"] if d["tx"] else 0
                sync_us = d["sync_ms"] * 1000 / d["syncs"] if d["syncs"] else 0
                out[(op, system)] = {"tps": tps, "catch_up": cu, "wal": wal, "primary_us": prim,
                                     "flushes_per_tx": per_tx, "flush_us": sync_us}
                rounds_txt = " + ".join(f"{x:,.0f}" for x in d["tps"])
                cu_txt = f"; replicas caught up {cu:.1f} s after the writes ended" if cu is not None else ""
                flips_txt = (f"; the publisher went idle {d['flips'] // 2} times (run and catch-up)"
                             if system == "pgfanout" and self.capture == "trigger" else "")
                prim_txt = f"; primary-side CPU {prim:.0f} us/change" if prim is not None else ""
                name = f"{self.capture} {system}" if system in ("capture", "shipping", "pgfanout") else system
                if system == "decoding":
                    name = "pg_recvlogical"
                log(f"  {op:<16} {name:<18} {tps:>9,.0f} tps ({rounds_txt}); WAL {wal:,.0f} B/tx, "
                    f"{per_tx:.2f} flushes/tx of {sync_us:.0f} us{cu_txt}"
                    f"{prim_txt}{flips_txt}")
        self.native(False)
        return out

    def cost_variants(self, op):
        """The cost run's variants for op in this capture mode, in COST_SYSTEMS' order."""
        if op.startswith("1,000"):
            return ("untracked", "pgfanout", "native")
        return tuple(s for s in COST_SYSTEMS if s != "decoding" or self.capture == "logical")

    def idle_flag_updates(self):
        """Updates of pgfanout.publisher_state so far, each a flip of the idle flag (the
        publisher's statistics reach pg_stat_user_tables within a second or so)."""
        return int(self.db(PRIMARY).value(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgfanout.publisher_state'::regclass"))

    def cost_run(self, op, system, pack, secs):
        prefix = {"untracked": "plain", "capture": "fo", "decoding": "fo", "shipping": "fo", "pgfanout": "fo",
                  "native": "lr"}[system]
        t = f"{prefix}_cost"
        prefill = self.args.update_rows if op == "update" else 0
        self.reset(prefix, "cost", prefill=prefill)
        self.native(system == "native")
        logical = self.capture == "logical"
        if logical and system not in ("pgfanout", "shipping"):
            # No walsender decoding beside untracked or native writers; "capture": the slot
            # keeps the changes and the publisher ships them after the run.
            self.quiesce_publisher()
        else:
            self.start_publisher(pack)
        if system == "capture" and not logical:
            # A publisher that stops clears the idle flag itself; make sure, since the
            # writers would NOTIFY at every commit otherwise.
            self.stop_publisher()
            self.db(PRIMARY).query("UPDATE pgfanout.publisher_state SET idle = false")
        flips0 = self.idle_flag_updates() if system == "pgfanout" and not logical else 0
        if system == "shipping":
            self.pause_listeners()
        if system == "decoding":
            self.start_decoding()
        if op == "insert":
            self.db(PRIMARY).query(f"SELECT setval('{t}_seq', 1000000)")
            script = (f"INSERT INTO {t} VALUES (nextval('{t}_seq'), 'a short line of text', "
                      f"'{{\"n\": 1, \"tag\": \"bench\"}}', now());\n")
        elif op.startswith("1,000"):
            self.db(PRIMARY).query(f"SELECT setval('{t}_seq', 1000000)")
            script = (f"INSERT INTO {t} SELECT nextval('{t}_seq'), 'a short line of text', "
                      f"'{{\"n\": 1, \"tag\": \"bench\"}}', now() FROM generate_series(1, 1000);\n")
        else:
            script = (f"\\set id random(1, {prefill})\n"
                      f"UPDATE {t} SET t = 'updated text', j = '{{\"n\": 2}}', ts = now() WHERE id = :id;\n")
        lsn0 = self.db(PRIMARY).value("SELECT pg_current_wal_insert_lsn()")
        try:
            sync0 = self.wal_syncs()
            snap0 = self.cpu_snapshot()
            tps = self.pgbench(script, PRIMARY, 4, seconds=secs, name=f"cost_{op}_{prefix}")
            time.sleep(0.5)  # pgbench's backends exit and are reaped (their CPU is then counted)
            snap1 = self.cpu_snapshot()
            wal = int(self.db(PRIMARY).value(f"SELECT pg_current_wal_insert_lsn() - '{lsn0}'::pg_lsn"))
            sync1 = self.wal_syncs()
            syncs = (sync1[0] - sync0[0], sync1[1] - sync0[1])
        finally:
            if system == "decoding":
                self.stop_decoding()  # and its slot, which would hold the WAL back
        kind = op if op.startswith("1,000") else f"single-row {op}"
        label = {"capture": "capture only", "shipping": "shipping, listeners stopped",
                 "decoding": "PostgreSQL's decoding alone (pg_recvlogical, no pgfanout process)"}.get(system, system)
        if system in ("capture", "shipping", "pgfanout"):
            label = f"{self.capture} {label}"
        self.record_cpu(f"primary cost, {kind}, {label}, {secs} s", snap0, snap1)
        if system == "shipping":
            self.resume_listeners()
            self.sentinel(t, FO_REPLICAS)
        if system in ("capture", "decoding"):
            self.start_publisher(pack)
            self.wait_shipped()
            # And applied: the next reset empties the replicas, and an UPDATE the listeners
            # apply after that puts its row back (as an upsert) under the prefill.
            self.sentinel(t, FO_REPLICAS)
        # Let the chain catch up before the next run; how long it takes is the lag that
        # these seconds of writes at full speed leave behind.
        t_end = time.monotonic()
        catch_up = foot_row = None
        if system in ("pgfanout", "native"):
            arrived = self.sentinel(t, FO_REPLICAS if prefix == "fo" else LR_REPLICAS)
            catch_up = max(arrived.values()) - t_end
            changes = int(round(tps * secs * (1000 if op.startswith("1,000") else 1))) + 1
            snap2 = self.cpu_snapshot()
            # Primary-side CPU of shipping these changes, catch-up included.
            d = self.cpu_delta(snap0, snap2)
            primary = sum(d.get(k, 0) for k in PRIMARY_SIDE) / changes
            if system == "pgfanout":
                foot_row = self.footprint_row(f"cost {op}s {self.capture} --pack {pack}", changes, snap0, snap2)
        else:
            primary = None
        flips = 0
        if system == "pgfanout" and not logical:
            time.sleep(1.2)
            flips = self.idle_flag_updates() - flips0
        return tps, catch_up, foot_row, wal, flips, primary, syncs

    def wal_syncs(self):
        """The primary instance's WAL flushes so far and their time in milliseconds (every
        process's: writers report theirs as they exit, busy sessions within a second or so;
        track_wal_io_timing is on, see machine())."""
        n, ms = self.db(PRIMARY).query("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")[0]
        return int(n), float(ms)

    def start_decoding(self):
        """PostgreSQL's pg_recvlogical streams a new slot of pgfanout's publication to /dev/null
        (pgoutput, protocol 1, as the publisher asks for): the walsender's decoding and sending
        with a consumer that does nothing. The slot is new, so it decodes only what follows."""
        self.db(PRIMARY).query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", DECODING_SLOT)
        self.decoder = Daemon("pg_recvlogical", [
            os.path.join(PGBIN, "pg_recvlogical"), "-d", self.conninfo(PRIMARY, "bench-decoding"),
            "--slot", DECODING_SLOT, "--start", "--no-loop", "-o", "proto_version=1",
            "-o", "publication_names=pgfanout", "-f", "/dev/null"], self.logdir, cpu_key="pg_recvlogical")
        self.wait_slot(True, slot=DECODING_SLOT, reader=self.decoder)

    def stop_decoding(self):
        self.decoder.stop()
        self.decoder = None
        self.wait_slot(False, slot=DECODING_SLOT)
        self.db(PRIMARY).query("SELECT pg_drop_replication_slot($1)", DECODING_SLOT)

    def pause_listeners(self):
        for d in self.listeners:
            self.listener_peak[d.name] = max(self.listener_peak.get(d.name, 0), d.mem().get("VmHWM", 0))
            d.stop()

    def resume_listeners(self):
        """Starts the listeners that pause_listeners() stopped, with the same arguments; their
        queues kept what came meanwhile."""
        self.listeners = [Daemon(d.name, d.argv, self.logdir, d.cpu_key) if not d.alive() else d
                          for d in self.listeners]
        for d in self.listeners:
            d.wait_log(r"consuming from")

    def sentinel(self, t, replicas):
        """Writes row -1 of cost table t on the primary and waits until every replica has it:
        what was written before it is applied there. Returns the arrival times."""
        self.db(PRIMARY).query(f"INSERT INTO {t} VALUES (-1, 'sentinel', NULL, now())")
        return self.wait_rows(replicas, f"SELECT EXISTS (SELECT FROM {t} WHERE id = -1)", self.args.timeout, 0.02)

    def latency(self, system, pack=None, under_load=False):
        """Commit-to-apply latency of single-row INSERTs at --latency-rate; under_load: while
        pgbench -c 4 inserts single rows into another tracked (or published) table as fast
        as it can, as in the primary-cost run."""
        prefix = "fo" if system == "pgfanout" else "lr"
        replicas = FO_REPLICAS if prefix == "fo" else LR_REPLICAS
        t = f"{prefix}_lat"
        self.reset(prefix, "lat")
        if under_load:
            self.reset(prefix, "cost")
            self.db(PRIMARY).query(f"SELECT setval('{prefix}_cost_seq', 1000000)")
        if prefix == "fo":
            self.native(False)
            self.start_publisher(pack)
        else:
            self.native(True)
        n = self.args.latency_n
        load = None
        if under_load:
            path = os.path.join(self.work, f"load_{prefix}.sql")
            with open(path, "w") as f:
                f.write(f"INSERT INTO {prefix}_cost VALUES (nextval('{prefix}_cost_seq'), 'a short line of text', "
                        f"'{{\"n\": 1, \"tag\": \"bench\"}}', now());\n")
            load = subprocess.Popen([f"{PGBIN}/pgbench", "-n", "-c", "4", "-j", str(min(4, NPROC)), "-f", path,
                                     "-T", str(int(n / self.args.latency_rate + 3)), self.conninfo(PRIMARY, "pgbench")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)  # into the steady state
        else:
            # Let everything settle into its idle state (publisher waiting on NOTIFY).
            time.sleep(1.0)
        writer = Pg(self.conninfo(PRIMARY, "bench-writer"))
        next_at = time.monotonic()
        for i in range(1, n + 1):
            writer.query(f"INSERT INTO {t} VALUES ({i}, 'latency probe', '{{\"i\": {i}}}', clock_timestamp())")
            next_at += 1.0 / self.args.latency_rate
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        writer.close()
        if load:
            if load.wait(self.args.timeout) != 0:
                raise BenchError("pgbench (the load under the latency probe) failed")
        self.wait_rows(replicas, f"SELECT count(*) = {n} FROM {t}", self.args.timeout, 0.02)
        sent = dict(self.db(PRIMARY).query(f"SELECT id, extract(epoch FROM ts)::float8 FROM {t}"))
        lat = []
        both = {}
        for r in replicas:
            for i, arr in self.db(r).query(f"SELECT id, extract(epoch FROM arrived)::float8 FROM {t}"):
                ms = (float(arr) - float(sent[i])) * 1000
                lat.append(ms)
                both[i] = max(both.get(i, 0), ms)
        lat.sort()
        worst = sorted(both.values())

        def pct(xs, p):
            return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
        res = {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": lat[-1], "both_p99": pct(worst, 99),
               "mean": statistics.mean(lat)}
        label = f"pgfanout {self.capture} --pack {pack}" if prefix == "fo" else "native LR"
        if under_load:
            label += ", loaded"
        log(f"  latency {label:<25} p50 {res['p50']:6.1f} ms  p99 {res['p99']:6.1f} ms  max {res['max']:6.1f} ms "
            f"(on both replicas: p99 {res['both_p99']:.1f} ms)")
        if prefix == "fo":
            self.changes_through_listeners += n
            if under_load:
                self.changes_through_listeners += int(self.db(PRIMARY).value(f"SELECT count(*) FROM {prefix}_cost"))
        return res


# --------------------------------------------------------------------------- report

def fmt_rate(x):
    return f"{x:,.0f}" if x is not None else "-"


def log_outbox(o):
    log(f"    outbox pgfanout.changes: {o['before']:.1f} MiB before, {o['size']:.1f} MiB after the run "
        f"(peak {o['peak_size']:.1f}), {o['dead']:,} dead tuples after (peak {o['peak_dead']:,})")


def report_fanout(b, captures):
    R = b.results
    ns = b.args.fanout_ns
    if not ns:  # no fan-out series asked for (--only without fanout)
        return
    systems = [s for s in [f"pgfanout {c}" for c in captures] + ["native LR"] if ("fanout", s, ns[0]) in R]
    if not systems:
        return
    log()
    log(f"fan-out: bulk, {b.args.fanout_rows:,} rows in 1,000-row transactions, delivered to N replicas "
        f"(pgfanout: 1 publisher --pack {b.fan_pack}, N listeners, each with its own queue and replica database;")
    log("native: 1 publication, N subscriptions). rows/s until the last replica holds every row; CPU in")
    log("microseconds per change (per row written on the primary, whatever N) by component")
    hdr = (f"{'system':<18}{'N':>3}{'rows/s':>9}{'/native':>8}{'writer':>8}{'capture':>8}{'publ.':>7}{'broker':>7}"
           f"{'listen.':>8}{'replica':>8}{'total':>7}{'primary':>8}{'apply/N':>8}{'others':>7}  load before")
    log(hdr)
    log("-" * len(hdr))
    for s in systems:
        for n in ns:
            r = R.get(("fanout", s, n))
            if not r:
                continue
            nat = R.get(("fanout", "native LR", n))
            u = r["us"]
            ratio = f"{r['rate'] / nat['rate']:.2f}x" if nat else "-"
            log(f"{s:<18}{n:>3}{r['rate']:>9,.0f}{ratio:>8}{u['writer']:>8.1f}{u['capture']:>8.1f}{u['publisher']:>7.1f}"
                f"{u['broker']:>7.1f}{u['listeners']:>8.1f}{u['replica']:>8.1f}{sum(u.values()):>7.1f}"
                f"{u['capture'] + u['publisher']:>8.1f}{(u['listeners'] + u['replica']) / n:>8.1f}"
                f"{r['others']:>6.0f}%  {r['load']}")
    log("  writer: the writing backend (trigger mode: the capture triggers and outbox inserts run in it);")
    log("  capture: the walsender(s) decoding the WAL (pgfanout logical: one; native: one per subscription);")
    log("  publ.: pgfanout-publisher and its PostgreSQL session; broker: RabbitMQ (beam.smp); listen.: the N")
    log("  pgfanout-listener processes; replica: their PostgreSQL sessions / native's N apply workers;")
    log("  primary = capture + publ. (what shipping costs the primary's machine; flat in N is the aim);")
    log("  apply/N = (listen. + replica) / N, the apply CPU per change per replica; others: share of the")
    log("  machine's CPU taken by processes not of this bench during that run")


def report(b, captures, cpacks, best):
    log()
    log("=" * 100)
    log("RESULTS (pgfanout: 1 publisher, 2 listeners, 2 replica DBs; native: 1 publication, 2 subscriptions)")
    log(f"pgfanout in capture mode{'s' if len(captures) > 1 else ''} {' and '.join(captures)}; ratios are of "
        f"each mode's best --pack ({', '.join(f'{c} {best[c]}' for c in captures)})")
    log("=" * 100)
    report_throughput(b, captures, cpacks, best)
    report_fanout(b, captures)
    report_rest(b, captures, best)


def report_throughput(b, captures, cpacks, best):
    """The bulk and updates table, when they ran."""
    R = b.results
    if not any(k[0] in ("bulk", "updates") for k in R):
        return
    cols = [(c, p) for c in captures for p in cpacks[c]]
    W = 34
    hdr = (f"{'workload':<{W}}" + "".join(f"{f'{c} --pack {p}':>19}" for c, p in cols) + f"{'native LR':>11}" +
           "".join(f"{f'{c}/native':>16}" for c in captures) + "  target")
    log(hdr)
    log("-" * len(hdr))

    def line(name, key, field, target=None, unit_fmt=fmt_rate):
        vals = [R.get((key, f"{c}{p}"), {}).get(field) for c, p in cols]
        nat = R.get((key, "native"), {}).get(field)
        if not any(v is not None for v in vals) or nat is None:
            return
        ratios, oks = [], []
        for c in captures:
            v = R.get((key, f"{c}{best[c]}"), {}).get(field)
            r = v / nat if v is not None and nat else None
            ratios.append(r)
            if target is not None and r is not None:
                oks.append(f"{c} {'met' if r >= target else 'NOT met'}")
        tgt = f"  >= {target:.1f}x: {', '.join(oks)}" if target is not None else ""
        log(f"{name:<{W}}" + "".join(f"{unit_fmt(v) if v is not None else '-':>19}" for v in vals) +
            f"{unit_fmt(nat):>11}" + "".join(f"{(f'{r:.2f}x' if r else '-'):>16}" for r in ratios) + tgt)

    line(f"bulk {b.args.rows // 1000}k rows, rows/s", "bulk", "rate", 1.0)
    line("  primary-side CPU, us/change", "bulk", "primary_us", unit_fmt=lambda x: f"{x:.1f}")
    line(f"updates {b.args.updates // 1000}k (pgbench -c4), rows/s", "updates", "rate", 1.0)
    line("  primary-side CPU, us/change", "updates", "primary_us", unit_fmt=lambda x: f"{x:.1f}")
    log("  primary-side CPU: pgfanout's publisher, its PostgreSQL sessions and (logical) the walsender that "
        "decodes for it;")
    log("  native: its 2 walsenders. Lower is better; the broker and the replicas' apply are in the CPU table below")


def report_rest(b, captures, best):
    R = b.results
    costs = [(c, R[("cost", c)]) for c in captures if ("cost", c) in R]
    if costs:
        log()
        log(f"primary cost: pgbench, 4 clients, {b.args.cost_seconds} s per variant in {b.args.cost_rounds} "
            f"alternating runs, chain running (each mode's best --pack); each capture mode has its own")
        log("alternation of untracked / capture / (decoding /) shipping / pgfanout / native, so its ratios are within "
            "one stretch of time")
        log(f"{'mode':<9}{'':<22}{'untracked':>10}{'capture':>9}{'decoding':>10}{'shipping':>10}{'pgfanout':>10}"
            f"{'native':>9}{'capt/untr':>11}{'dec/untr':>10}{'ship/untr':>11}{'pgf/untr':>10}{'nat/untr':>10}"
            f"{'pgf/nat':>9}{'CPU pgf':>9}{'CPU nat':>9}  target")
        for cap, c in costs:
            for op in ("insert", "update", "1,000-row insert"):
                if (op, "untracked") not in c:
                    continue
                u, f_, n = (c[(op, s)]["tps"] for s in ("untracked", "pgfanout", "native"))
                k = c.get((op, "capture"), {}).get("tps")
                sh = c.get((op, "shipping"), {}).get("tps")
                dc = c.get((op, "decoding"), {}).get("tps")
                pf, pn = (c[(op, s)].get("primary_us") for s in ("pgfanout", "native"))
                single = not op.startswith("1,000")
                name = f"single-row {op} tps" if single else "1,000-row insert tps"
                if not single:
                    tgt = "(no target; bounds bulk)"
                elif cap == "logical":
                    tgt = (f">= 0.8x untr. {'met' if f_ / u >= 0.8 else 'NOT met'}, "
                           f">= native {'met' if f_ >= n else 'NOT met'}")
                else:
                    tgt = f">= 0.7x untr. {'met' if f_ / u >= 0.7 else 'NOT met'}"
                log(f"{cap:<9}{name:<22}{u:>10,.0f}{fmt_rate(k):>9}{fmt_rate(dc):>10}{fmt_rate(sh):>10}{f_:>10,.0f}"
                    f"{n:>9,.0f}{(f'{k / u:.2f}x' if k else '-'):>11}{(f'{dc / u:.2f}x' if dc else '-'):>10}"
                    f"{(f'{sh / u:.2f}x' if sh else '-'):>11}"
                    f"{f_ / u:>9.2f}x{n / u:>9.2f}x{f_ / n:>8.2f}x"
                    f"{(f'{pf:.1f}' if pf is not None else '-'):>9}{(f'{pn:.1f}' if pn is not None else '-'):>9}  {tgt}")
        log("  capture = the tracked table with the publisher stopped: the capture's own cost (trigger: the")
        log("  triggers, no chain, no NOTIFY; logical: REPLICA IDENTITY FULL, no walsender decoding). decoding")
        log("  (logical mode) = no pgfanout process, PostgreSQL's own pg_recvlogical streaming a slot of the same")
        log("  publication to /dev/null: what decoding costs the writers whoever consumes it. shipping = the")
        log("  publisher (and its walsender) running, the listeners stopped: the primary's side of the chain alone,")
        log("  the broker's consumers and the replicas' apply left out (their queues drain after). CPU pgf / nat:")
        log("  primary-side CPU per change in microseconds (as above), over the run and the replicas' catch-up")
        for cap, c in costs:
            for op in ("insert", "update", "1,000-row insert"):
                if (op, "untracked") not in c:
                    continue
                f_, n = (c[(op, s)]["catch_up"] for s in ("pgfanout", "native"))
                log(f"  {cap}: after the {op} run, the replicas caught up in: pgfanout {f_:.1f} s, native {n:.1f} s")
        for cap, c in costs:
            for op in ("insert", "update"):
                if (op, "untracked") in c:
                    log(f"  {cap}: WAL per single-row {op}: " + ", ".join(
                        f"{s} {c[(op, s)]['wal']:,.0f} B" for s in COST_SYSTEMS if (op, s) in c))
                    log(f"  {cap}: WAL flushes in the single-row {op} runs (the instance's), per writer transaction "
                        "and their time: " + ", ".join(
                            f"{s} {c[(op, s)]['flushes_per_tx']:.2f} of {c[(op, s)]['flush_us']:.0f} us"
                            for s in COST_SYSTEMS if (op, s) in c))
    if ("latency", "native") in R:
        log()
        log(f"latency: {b.args.latency_n} single-row transactions, {b.args.latency_rate:g} a second, writer's commit "
            f"(clock_timestamp() in the INSERT) to the row's apply on a replica (replica default column)")
        lat = [c for c in captures if ("latency", f"{c}{best[c]}") in R]
        log(f"{'':<22}" + "".join(f"{f'{c} --pack {best[c]}':>20}" for c in lat) + f"{'native LR':>12}" +
            "".join(f"{f'{c}/native':>16}" for c in lat) + "  target")
        for suffix, key in (("", "latency"), (", under load", "latency loaded")):
            if (key, "native") not in R:
                continue
            n = R[(key, "native")]
            fs = [R[(key, f"{c}{best[c]}")] for c in lat]
            for k in ("p50", "p99", "max"):
                tgt = ""
                if k == "p99" and not suffix:
                    tgt = "< 50 ms: " + ", ".join(f"{c} {'met' if f_[k] < 50 else 'NOT met'}" for c, f_ in zip(lat, fs))
                log(f"{k + ' ms' + suffix:<22}" + "".join(f"{f_[k]:>20.1f}" for f_ in fs) + f"{n[k]:>12.1f}" +
                    "".join(f"{(f_[k] / n[k] if n[k] else 0):>15.2f}x" for f_ in fs) + f"  {tgt}")

    log()
    log("footprint: CPU seconds per 100,000 changes, by process (peak RSS below); the outbox")
    log("pgfanout.changes after the run (heap + indexes + TOAST) and its dead tuples, peak in ()")
    names = ["publisher"] + [f"listener{i + 1}" for i in range(len(b.listeners))]
    log(f"{'workload':<34}{'changes':>10}" + "".join(f"{n:>12}" for n in names) +
        f"{'outbox MiB':>18}{'dead tuples':>22}")
    for row in b.footprint:
        per = 100_000 / row["changes"] if row["changes"] else 0
        o = row.get("outbox")
        outbox = (f"{o['size']:>8.1f} ({o['peak_size']:5.1f}){o['dead']:>11,} ({o['peak_dead']:>8,})" if o
                  else f"{'-':>18}{'-':>22}")
        log(f"{row['title']:<34}{row['changes']:>10,}" + "".join(f"{row[n] * per:>12.2f}" for n in names) +
            outbox)
    for (cap, pack), hwm in sorted(b.pub_peak.items()):
        log(f"  publisher started in {cap} mode, --pack {pack}: peak RSS (VmHWM) {hwm:.1f} MiB")
    for d in b.listeners:
        m = d.mem()
        hwm = max(m.get("VmHWM", 0), b.listener_peak.get(d.name, 0))
        restarted = " (over its restarts after the shipping variants)" if d.name in b.listener_peak else ""
        log(f"  {d.name}: peak RSS (VmHWM) {hwm:.1f} MiB{restarted}, RSS now {m.get('VmRSS', 0):.1f} MiB "
            f"after {b.changes_through_listeners:,} changes in this run")
    if ("volume", "rss") in R:
        samples = R[("volume", "rss")]
        log(f"  RSS (MiB) and the outbox while 1,000,000 changes flow through (pgfanout {captures[0]} "
            f"--pack {best[captures[0]]}, bulk, "
            f"sampled every 100,000 applied):")
        procs = list(samples[0][1].keys())
        log(f"  {'changes':>10}" + "".join(f"{p:>22}" for p in procs) + f"{'outbox MiB':>12}{'dead tuples':>13}")
        for n, mems, (size, dead) in samples:
            log(f"  {n:>10,}" + "".join(f"{mems[p].get('VmRSS', 0):>12.1f} (hwm {mems[p].get('VmHWM', 0):5.1f})"
                                         for p in procs) + f"{size:>12.1f}{dead:>13,}")
        o = R[("volume", "outbox")]
        log(f"  1M bulk end to end: {R[('volume', 'rate')]:,.0f} rows/s (written in steps of 100k, waiting for each); "
            f"outbox peak {o['peak_size']:.1f} MiB, {o['peak_dead']:,} dead tuples (sampled every 0.5 s)")
    else:
        log("  RSS after 1,000,000 changes: not run (bench/run.sh --full runs it)")

    if not b.per_change:
        log()
        report_cpu_went(b)
        return
    log()
    log("CPU per change, microseconds (each change applied to 2 replicas): less sensitive to the other load")
    log("on this machine than rows/s; a saturated machine divides its cores by these")
    groups = [("writers", ("pg: writers' sessions",)),
              ("ship", ("pgfanout-publisher", "pg: publisher's session", "pg: walsender (pgfanout)", "rabbitmq (beam)",
                        "pg: walsenders (native)")),
              ("apply", ("pgfanout-listener1", "pgfanout-listener2", "pg: listeners' sessions", "pg: apply workers (native)"))]
    log(f"{'run':<52}{'writers':>9}{'ship':>9}{'apply':>9}{'total':>9}{'primary':>9}{'others':>8}   ship / apply detail")
    walls = {title: wall for title, wall, _ in b.cpu_tables}
    for title, changes, d in b.per_change:
        per = 1e6 / changes
        sums = [sum(d.get(k, 0) for k in keys) * per for _, keys in groups]
        others = d.get("(processes not of this bench)", 0) / (walls[title] * NPROC) * 100
        detail = ", ".join(f"{k} {v * per:.0f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])
                           if any(k in keys for _, keys in groups[1:]) and v * per >= 1)
        primary = sum(d.get(k, 0) for k in PRIMARY_SIDE) * per
        log(f"{title:<52}" + "".join(f"{x:>9.0f}" for x in sums) + f"{sum(sums):>9.0f}{primary:>9.0f}"
            f"{others:>7.0f}%   {detail}")
    log("  (primary: publisher, its sessions and pgfanout's walsender / native's walsenders, part of ship;")
    log("  others: share of the machine's CPU taken by processes that are not the bench's during that run)")
    log()
    report_cpu_went(b)


def report_cpu_went(b):
    log(f"where the CPU went (seconds; the machine has {NPROC} cores, so wall x {NPROC} is all there is)")
    for title, wall, d in b.cpu_tables:
        total = sum(v for k, v in d.items() if not k.startswith("("))
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))
        log(f"  {title}: wall {wall:.1f} s, busy {total:.1f} of {wall * NPROC:.1f} cpu-s "
            f"({100 * total / (wall * NPROC):.0f}%) by the bench's processes")
        log(f"      {parts}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-bench", "bin"))
    ap.add_argument("--packs", default="1,100", help="publisher --pack settings to compare (default 1,100)")
    ap.add_argument("--captures", default="trigger,logical",
                    help="pgfanout capture modes to run, in this order (default trigger,logical; "
                         "pgfanout.set_capture() switches between them)")
    ap.add_argument("--logical-packs",
                    help="--pack settings in logical mode (default: the last of --packs only, to bound the run)")
    ap.add_argument("--full", action="store_true", help="also push 1,000,000 changes and sample RSS")
    ap.add_argument("--only", default="bulk,updates,cost,latency",
                    help="workloads to run, comma-separated (bulk,updates,cost,latency,fanout)")
    ap.add_argument("--fanout", default="",
                    help="replica counts of the fan-out series, e.g. 1,2,4,8 (bulk workload to N replicas, "
                         "native and each capture mode); adds fanout to --only; --only fanout alone means 1,2,4,8")
    ap.add_argument("--fanout-rows", type=int, default=200_000,
                    help="rows of each fan-out run, in 1,000-row transactions (default 200,000)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument("--update-rows", type=int, default=100_000)
    ap.add_argument("--cost-seconds", type=int, default=10, help="pgbench seconds per primary-cost variant")
    ap.add_argument("--cost-rounds", type=int, default=2,
                    help="split each primary-cost variant into this many alternating runs (default 2)")
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--latency-rate", type=float, default=50,
                    help="single-row INSERTs a second in the latency run (default 50: 20 ms apart)")
    ap.add_argument("--log-dir", help="where the publisher's and listeners' logs go (default: a new /tmp dir)")
    ap.add_argument("--timeout", type=float, default=240, help="bound on every wait, seconds")
    ap.add_argument("--replica-run-dir",
                    help="run directory of a second PostgreSQL instance (scripts/servers.sh start-pg) that holds "
                         "the replica databases; bench/run.sh --replicas-apart sets it")
    args = ap.parse_args()
    if args.latency_rate <= 0:
        ap.error("--latency-rate takes a positive number of INSERTs a second")
    packs = [int(p) for p in args.packs.split(",")]
    only = set(args.only.split(","))
    if args.fanout:
        only.add("fanout")
    if "fanout" in only:
        try:
            args.fanout_ns = sorted({int(n) for n in (args.fanout or "1,2,4,8").split(",")})
        except ValueError:
            ap.error("--fanout takes replica counts, comma-separated")
        if args.fanout_ns[0] < 1 or args.fanout_ns[-1] > FAN_MAX:
            ap.error(f"--fanout takes replica counts from 1 to {FAN_MAX}")
        if args.fanout_rows < 1000 or args.fanout_rows % 1000:
            ap.error("--fanout-rows takes a multiple of 1,000")
    else:
        args.fanout_ns = []
    if only - {"bulk", "updates", "cost", "latency", "fanout"}:
        ap.error("--only takes bulk, updates, cost, latency and fanout, comma-separated")
    args.standard_listeners = bool(only - {"fanout"})
    captures = [c for c in args.captures.split(",") if c]
    if not captures or any(c not in ("trigger", "logical") for c in captures) or len(set(captures)) != len(captures):
        ap.error("--captures takes trigger, logical or both, comma-separated")
    cpacks = {"trigger": packs,
              "logical": [int(p) for p in args.logical_packs.split(",")] if args.logical_packs else packs[-1:]}
    cpacks = {c: cpacks[c] for c in captures}

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    b = Bench(args)
    atexit.register(Daemon.stop_all)
    started = time.monotonic()
    try:
        b.machine()
        log(f"run: workloads {sorted(only)}, captures {captures}, packs {cpacks}, full={args.full}, "
            f"{args.rows:,} bulk rows, {args.updates:,} updates")
        b.setup()
        best = {}
        for i, cap in enumerate(captures):
            first = i == 0  # native's bulk, updates and latency run once, with the first mode
            packs = cpacks[cap]
            log()
            log(f"----- pgfanout capture mode: {cap} (packs {packs})")
            b.switch_capture(cap, packs[-1])
            if "bulk" in only:
                log("bulk: 1,000-row INSERT transactions (one session, DO loop with COMMIT)")
                for p in packs:
                    b.results[("bulk", f"{cap}{p}")] = b.bulk("pgfanout", p)
                if first:
                    b.results[("bulk", "native")] = b.bulk("native")
            if "updates" in only:
                log(f"updates: pgbench -c 4 -j {min(4, NPROC)}, single-row UPDATE by primary key, random ids "
                    f"over {args.update_rows:,} rows")
                for p in packs:
                    b.results[("updates", f"{cap}{p}")] = b.updates("pgfanout", p)
                if first:
                    b.results[("updates", "native")] = b.updates("native")
            # The best setting: the one whose worse throughput ratio to native is highest.
            scored = []
            for p in packs:
                ratios = [b.results[(w, f"{cap}{p}")]["rate"] / b.results[(w, "native")]["rate"]
                          for w in ("bulk", "updates") if (w, f"{cap}{p}") in b.results]
                if ratios:
                    scored.append((min(ratios), p))
            best[cap] = max(scored)[1] if scored else packs[-1]
            log(f"best pgfanout setting in {cap} mode: --pack {best[cap]}")
            if "cost" in only:
                order = " ".join(b.cost_variants("insert"))
                log(f"primary cost ({cap} mode): pgbench -c 4, {args.cost_seconds} s per variant in "
                    f"{args.cost_rounds} alternating runs ({order}, then back, ...)")
                b.results[("cost", cap)] = b.cost(best[cap])
            if "latency" in only:
                log(f"latency: {args.latency_n} single-row INSERTs, {args.latency_rate:g} a second")
                b.results[("latency", f"{cap}{best[cap]}")] = b.latency("pgfanout", best[cap])
                if first:
                    b.results[("latency", "native")] = b.latency("native")
                log("latency under load: the same while pgbench -c 4 inserts single rows as fast as it can")
                b.results[("latency loaded", f"{cap}{best[cap]}")] = b.latency("pgfanout", best[cap], under_load=True)
                if first:
                    b.results[("latency loaded", "native")] = b.latency("native", under_load=True)
            if "fanout" in only:
                b.fan_pack = cpacks[cap][-1]
                log(f"fan-out ({cap} mode): bulk, {args.fanout_rows:,} rows to N = "
                    f"{', '.join(map(str, args.fanout_ns))} replicas")
                for n in args.fanout_ns:
                    b.results[("fanout", f"pgfanout {cap}", n)] = b.fanout("pgfanout", n, b.fan_pack)
                if first:
                    for n in args.fanout_ns:
                        b.results[("fanout", "native LR", n)] = b.fanout("native", n)
            if args.full and first:
                log(f"volume: 1,000,000 bulk-inserted rows through pgfanout ({cap} mode), RSS sampled every 100,000")
                r = b.bulk("pgfanout", best[cap], rows=1_000_000, sample_rss=True)
                b.results[("volume", "rss")] = r["rss_samples"]
                b.results[("volume", "rate")] = r["rate"]
                b.results[("volume", "outbox")] = r["outbox"]
        switch_back = b.capture != "trigger"
        b.note_publisher_peak()
        report(b, captures, cpacks, best)
        if switch_back:
            # Leave the primary as install.sql does, and check that the publisher follows
            # the way back too (it ships what the slot holds, then drops it). After the
            # report, so that a publisher that does not follow loses no figures.
            log()
            b.switch_capture("trigger", best[b.capture], timeout=min(60.0, args.timeout))
        b.stop_publisher()
        log()
        log(f"bench finished in {time.monotonic() - started:.0f} s; load average now "
            f"{' '.join(open('/proc/loadavg').read().split()[:3])}; process logs in {b.logdir}")
    except (BenchError, PgError, subprocess.TimeoutExpired) as e:
        log(f"bench FAILED: {e}")
        for d in Daemon.running:
            log(f"  {d.name} log tail ({d.log_path}):")
            try:
                for line in open(d.log_path, errors="replace").read().splitlines()[-8:]:
                    log(f"    {line}")
            except FileNotFoundError:
                pass
        return 1
    finally:
        Daemon.stop_all()
        try:
            if getattr(b, "native_on", False):
                b.native(False)
        except Exception:  # the servers may be gone already
            pass
        for c in b.conns.values():
            c.close()
        shutil.rmtree(b.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

PRIMARY = "bench_primary"
FO_REPLICAS = ["bench_fo1", "bench_fo2"]
LR_REPLICAS = ["bench_lr1", "bench_lr2"]
EXCHANGE = "pgfanout_bench"

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
    """A pgfanout process we started; stopped by its PID only."""
    running = []

    def __init__(self, name, argv, logdir):
        self.name = name
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.logf = open(self.log_path, "ab")
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
        self.listeners = []
        self.pub_pack = None
        self.results = {}       # (workload, system) -> dict
        self.footprint = []     # rows for the footprint table
        self.cpu_tables = []    # (title, wall, {component: seconds})
        self.per_change = []    # (title, changes, {component: seconds}) of the throughput runs
        self.pub_peak = {}      # pack -> VmHWM MiB of that publisher instance
        self.outbox_watch = None  # peaks of the outbox's size while a throughput run is watched
        self.changes_through_listeners = 0
        self.pg_postmaster = self.read_postmaster_pid()
        self.rabbit_pid = self.read_rabbit_pid()
        self.conns = {}

    # ----- connections and helpers
    def conninfo(self, db, app="bench"):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db} application_name={app}"

    def db(self, name):
        if name not in self.conns:
            self.conns[name] = Pg(self.conninfo(name))
        return self.conns[name]

    def read_postmaster_pid(self):
        env = open(os.path.join(self.run_dir, "pg.env")).read()
        data = re.search(r"PGDATA_DIR=(\S+)", env).group(1).strip("'\"")
        self.pgdata = data
        with open(os.path.join(data, "postmaster.pid")) as f:
            return int(f.readline())

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
        log(f"machine: {NPROC} cores ({cpu}), {mem_kb / 1048576:.1f} GiB RAM, kernel {os.uname().release}")
        log(f"servers: PostgreSQL {pgv} (synchronous_commit={fsync}, shared_buffers="
            f"{admin.value('SHOW shared_buffers')}), RabbitMQ {rmq}; all on 127.0.0.1")
        admin.close()
        log(f"disk: {fdatasync_rate(self.pgdata):,.0f} fdatasync/s of one 8 kB write in the PostgreSQL data "
            f"directory (bounds single-row commits per WAL flush)")
        log(f"load average before the run: {' '.join(open('/proc/loadavg').read().split()[:3])} "
            f"(other work on this machine competes with the bench)")

    # ----- setup
    def setup(self):
        admin = Pg(self.admin_conninfo)
        admin.query("SET client_min_messages = warning")
        # Leftovers of an earlier run on reused servers: subscriptions hold their slots.
        existing = {r[0] for r in admin.query("SELECT datname FROM pg_database")}
        for r in LR_REPLICAS:
            if r in existing:
                with Pg(self.conninfo(r)) as c:
                    if c.value(f"SELECT count(*) FROM pg_subscription WHERE subname = '{r}'") != "0":
                        c.query(f"ALTER SUBSCRIPTION {r} DISABLE")
                        c.query(f"ALTER SUBSCRIPTION {r} SET (slot_name = NONE)")
                        c.query(f"DROP SUBSCRIPTION {r}")
        for _ in deadline_loop(60, "old replication slots to be released", 0.1):
            if admin.value("SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name LIKE 'bench_lr%'") == "0":
                break
        admin.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bench_lr%'")
        for d in [PRIMARY] + FO_REPLICAS + LR_REPLICAS:
            admin.query(f"DROP DATABASE IF EXISTS {d} WITH (FORCE)")
            admin.query(f"CREATE DATABASE {d}")
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

        for i, r in enumerate(FO_REPLICAS):
            d = Daemon(f"listener{i + 1}", [os.path.join(self.bindir, "pgfanout-listener"),
                                            "--target", self.conninfo(r, "pgfanout-listener"),
                                            "--queue", f"bench_{r}", "--amqp", self.amqp,
                                            "--exchange", EXCHANGE], self.logdir)
            self.listeners.append(d)
        for d in self.listeners:
            d.wait_log(r"consuming from")

    def start_publisher(self, pack):
        if self.publisher and self.pub_pack == pack:
            return
        self.stop_publisher()
        self.publisher = Daemon(f"publisher-pack{pack}", [os.path.join(self.bindir, "pgfanout-publisher"),
                                                           "--source", self.conninfo(PRIMARY, "pgfanout-publisher"),
                                                           "--amqp", self.amqp, "--exchange", EXCHANGE,
                                                           "--pack", str(pack)], self.logdir)
        self.pub_pack = pack
        self.publisher.wait_log(r"outbox holds")

    def stop_publisher(self):
        if self.publisher:
            hwm = self.publisher.mem().get("VmHWM", 0)
            self.pub_peak[self.pub_pack] = max(self.pub_peak.get(self.pub_pack, 0), hwm)
            self.publisher.stop()
            self.publisher = None

    # ----- native replication on/off
    def slots_active(self):
        rows = self.db(PRIMARY).query("SELECT slot_name, active FROM pg_replication_slots ORDER BY 1")
        return {r[0]: r[1] == "t" for r in rows}

    def native(self, on):
        p = self.db(PRIMARY)
        if on == self.native_on:
            return
        if on:
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
    def reset(self, prefix, table, prefill=0):
        """Empties table `{prefix}_{table}` on the primary and its replicas without capturing
        or replicating it, then prefills ids 0..prefill identically everywhere."""
        self.wait_outbox_empty()
        was_on = self.native_on
        self.native(False)
        name = f"{prefix}_{table}"
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
        rows = self.db(PRIMARY).query("SELECT pid, backend_type, coalesce(application_name, '') FROM pg_stat_activity")
        out = {}
        for pid, btype, app in rows:
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
                cls = "pg: walsenders (native)"
            elif btype == "logical replication worker":
                cls = "pg: apply workers (native)"
            elif btype.startswith("autovacuum"):
                cls = "pg: autovacuum"
            else:
                cls = "pg: wal writer, checkpointer, bgwriter"
            out[int(pid)] = cls
        return out

    def cpu_snapshot(self):
        snap = {"t": time.monotonic(), "daemons": {}, "pg": {}, "classes": self.pg_classes()}
        for d in Daemon.running:
            snap["daemons"][d.name] = d.cpu()
        if self.rabbit_pid:
            c = proc_cpu(self.rabbit_pid)
            snap["rabbit"] = (c[0] + c[1]) if c else 0.0
        pm = proc_cpu(self.pg_postmaster)
        snap["pm"] = pm
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            c = proc_cpu(int(pid))
            if c and c[2] == self.pg_postmaster:
                snap["pg"][int(pid)] = c[0]
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
                key = "pgfanout-publisher" if name.startswith("publisher") else f"pgfanout-{name}"
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
        label = f"pgfanout --pack {pack}" if prefix == "fo" else "native LR"
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
        log(f"  bulk {label:<20} {rows:>9,} rows: {res['rate']:>9,.0f} rows/s end to end "
            f"({res['seconds']:.2f} s; the primary took {res['write_seconds']:.2f} s to write them; "
            f"last replica {res['lag']:.2f} s behind)")
        self.record_cpu(f"bulk, {label}, {rows:,} rows", snap0, snap1, rows)
        if prefix == "fo":
            res["outbox"] = self.end_outbox_watch()
            log_outbox(res["outbox"])
            self.record_footprint(f"bulk --pack {pack}", rows, snap0, snap1, res["outbox"])
        if sample_rss:
            res["rss_samples"] = samples
        return res

    @staticmethod
    def bulk_sql(table, first_txn, end_txn):
        return (f"DO $$ BEGIN FOR b IN {first_txn}..{end_txn - 1} LOOP "
                f"INSERT INTO {table} SELECT g, {ROW_SQL} FROM generate_series(b * 1000 + 1, b * 1000 + 1000) g; "
                f"COMMIT; END LOOP; END $$")

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
        label = f"pgfanout --pack {pack}" if prefix == "fo" else "native LR"
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
        log(f"  updates {label:<17} {n:>9,} rows: {res['rate']:>9,.0f} rows/s end to end "
            f"({res['seconds']:.2f} s; pgbench alone {tps:,.0f} tps; last replica {res['lag']:.2f} s behind)")
        self.record_cpu(f"updates, {label}, {n:,} rows", snap0, snap1, n)
        if prefix == "fo":
            res["outbox"] = self.end_outbox_watch()
            log_outbox(res["outbox"])
            self.record_footprint(f"updates --pack {pack}", n, snap0, snap1, res["outbox"])
        return res

    def cost(self, pack):
        """pgbench TPS untracked / tracked without the chain / tracked / published. Each variant runs `rounds` times for
        cost_seconds / rounds, in the order A B C D D C B A ..., so that a neighbour's load that
        comes and goes during the section weighs on every variant alike."""
        rounds = max(1, self.args.cost_rounds)
        secs = max(2, round(self.args.cost_seconds / rounds))
        out = {}
        for op in ("insert", "update", "1,000-row insert"):
            # "capture": the tracked table with the publisher stopped (and the idle flag
            # false, so no NOTIFY): what the capture alone costs, the bound of the others.
            # Not for 1,000-row inserts, whose backlog would take long to drain.
            systems = ("untracked", "capture", "pgfanout", "native") if not op.startswith("1,000") \
                else ("untracked", "pgfanout", "native")
            done = {s: {"tx": 0.0, "secs": 0.0, "catch_up": [], "tps": [], "wal": 0, "flips": 0}
                    for s in systems}
            foot = None
            for r in range(rounds):
                for system in (systems if r % 2 == 0 else tuple(reversed(systems))):
                    tps, catch_up, foot_row, wal, flips = self.cost_run(op, system, pack, secs)
                    d = done[system]
                    d["tx"] += tps * secs
                    d["secs"] += secs
                    d["tps"].append(tps)
                    d["wal"] += wal
                    d["flips"] += flips
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
                out[(op, system)] = {"tps": tps, "catch_up": cu, "wal": wal}
                rounds_txt = " + ".join(f"{x:,.0f}" for x in d["tps"])
                cu_txt = f"; replicas caught up {cu:.1f} s after the writes ended" if cu is not None else ""
                flips_txt = (f"; the publisher went idle {d['flips'] // 2} times (run and catch-up)"
                             if system == "pgfanout" else "")
                log(f"  {op:<16} {system:<10} {tps:>9,.0f} tps ({rounds_txt}); WAL {wal:,.0f} B/tx{cu_txt}{flips_txt}")
        self.native(False)
        return out

    def idle_flag_updates(self):
        """Updates of pgfanout.publisher_state so far, each a flip of the idle flag (the
        publisher's statistics reach pg_stat_user_tables within a second or so)."""
        return int(self.db(PRIMARY).value(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgfanout.publisher_state'::regclass"))

    def cost_run(self, op, system, pack, secs):
        prefix = {"untracked": "plain", "capture": "fo", "pgfanout": "fo", "native": "lr"}[system]
        t = f"{prefix}_cost"
        prefill = self.args.update_rows if op == "update" else 0
        self.reset(prefix, "cost", prefill=prefill)
        self.native(system == "native")
        self.start_publisher(pack)
        if system == "capture":
            # A publisher that stops clears the idle flag itself; make sure, since the
            # writers would NOTIFY at every commit otherwise.
            self.stop_publisher()
            self.db(PRIMARY).query("UPDATE pgfanout.publisher_state SET idle = false")
        flips0 = self.idle_flag_updates() if system == "pgfanout" else 0
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
        snap0 = self.cpu_snapshot()
        tps = self.pgbench(script, PRIMARY, 4, seconds=secs, name=f"cost_{op}_{prefix}")
        time.sleep(0.5)  # pgbench's backends exit and are reaped (their CPU is then counted)
        snap1 = self.cpu_snapshot()
        wal = int(self.db(PRIMARY).value(f"SELECT pg_current_wal_insert_lsn() - '{lsn0}'::pg_lsn"))
        kind = op if op.startswith("1,000") else f"single-row {op}"
        label = "capture only" if system == "capture" else system
        self.record_cpu(f"primary cost, {kind}, {label}, {secs} s", snap0, snap1)
        if system == "capture":
            self.start_publisher(pack)
            self.wait_outbox_empty()
        # Let the chain catch up before the next run; how long it takes is the lag that
        # these seconds of writes at full speed leave behind.
        t_end = time.monotonic()
        catch_up = foot_row = None
        if system in ("pgfanout", "native"):
            replicas = FO_REPLICAS if prefix == "fo" else LR_REPLICAS
            self.db(PRIMARY).query(f"INSERT INTO {t} VALUES (-1, 'sentinel', NULL, now())")
            arrived = self.wait_rows(replicas, f"SELECT EXISTS (SELECT FROM {t} WHERE id = -1)",
                                     self.args.timeout, 0.02)
            catch_up = max(arrived.values()) - t_end
            if system == "pgfanout":
                changes = int(round(tps * secs * (1000 if op.startswith("1,000") else 1))) + 1
                foot_row = self.footprint_row(f"cost {op}s --pack {pack}", changes, snap0, self.cpu_snapshot())
        flips = 0
        if system == "pgfanout":
            time.sleep(1.2)
            flips = self.idle_flag_updates() - flips0
        return tps, catch_up, foot_row, wal, flips

    def latency(self, system, pack=None, under_load=False):
        """Commit-to-apply latency of single-row INSERTs 20 ms apart; under_load: while
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
                                     "-T", str(int(n * 0.02 + 3)), self.conninfo(PRIMARY, "pgbench")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)  # into the steady state
        else:
            # Let everything settle into its idle state (publisher waiting on NOTIFY).
            time.sleep(1.0)
        writer = Pg(self.conninfo(PRIMARY, "bench-writer"))
        next_at = time.monotonic()
        for i in range(1, n + 1):
            writer.query(f"INSERT INTO {t} VALUES ({i}, 'latency probe', '{{\"i\": {i}}}', clock_timestamp())")
            next_at += 0.020
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
        label = f"pgfanout --pack {pack}" if prefix == "fo" else "native LR"
        if under_load:
            label += ", loaded"
        log(f"  latency {label:<17} p50 {res['p50']:6.1f} ms  p99 {res['p99']:6.1f} ms  max {res['max']:6.1f} ms "
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


def report(b, packs, best):
    R = b.results
    log()
    log("=" * 100)
    log("RESULTS (pgfanout: 1 publisher, 2 listeners, 2 replica DBs; native: 1 publication, 2 subscriptions)")
    log("=" * 100)
    cols = [f"pack {p}" for p in packs]
    hdr = f"{'workload':<34}" + "".join(f"{'pgfanout ' + c:>17}" for c in cols) + f"{'native LR':>13}{'ratio':>8}  target"
    log(hdr)
    log("-" * len(hdr))

    def line(name, key, field, target, higher=True, unit_fmt=fmt_rate):
        vals = [R.get((key, f"fo{p}"), {}).get(field) for p in packs]
        nat = R.get((key, "native"), {}).get(field)
        if not any(v is not None for v in vals) or nat is None:
            return
        bestv = R.get((key, f"fo{best}"), {}).get(field)
        ratio = bestv / nat if bestv and nat else None
        ok = "" if ratio is None else ("met" if (ratio >= target if higher else ratio <= target) else "NOT met")
        log(f"{name:<34}" + "".join(f"{unit_fmt(v) if v is not None else '-':>17}" for v in vals) +
            f"{unit_fmt(nat):>13}{(f'{ratio:.2f}x' if ratio else '-'):>8}  >= {target:.1f}x {ok}")

    line(f"bulk {b.args.rows // 1000}k rows, rows/s", "bulk", "rate", 1.0)
    line(f"updates {b.args.updates // 1000}k (pgbench -c4), rows/s", "updates", "rate", 1.0)
    if ("cost", "all") in R:
        c = R[("cost", "all")]
        log()
        log(f"primary cost: pgbench, 4 clients, {b.args.cost_seconds} s per variant in {b.args.cost_rounds} "
            f"alternating runs, chain running (pgfanout --pack {best})")
        log(f"{'':<22}{'untracked':>12}{'capture':>12}{'pgfanout':>12}{'native LR':>12}{'capture/untr.':>15}"
            f"{'pgfanout/untr.':>16}{'native/untr.':>14}  target")
        for op in ("insert", "update", "1,000-row insert"):
            if (op, "untracked") not in c:
                continue
            u, f_, n = (c[(op, s)]["tps"] for s in ("untracked", "pgfanout", "native"))
            k = c.get((op, "capture"), {}).get("tps")
            r = f_ / u
            single = not op.startswith("1,000")
            name = f"single-row {op} tps" if single else "1,000-row insert tps"
            tgt = f"  >= 0.7x {'met' if r >= 0.7 else 'NOT met'}" if single else "  (no target; bounds bulk)"
            log(f"{name:<22}{u:>12,.0f}{fmt_rate(k):>12}{f_:>12,.0f}{n:>12,.0f}"
                f"{(f'{k / u:.2f}x' if k else '-'):>15}{r:>15.2f}x{n / u:>13.2f}x{tgt}")
        log("  capture = the tracked table with the publisher stopped (no chain, no NOTIFY): the capture's own cost")
        for op in ("insert", "update", "1,000-row insert"):
            if (op, "untracked") not in c:
                continue
            f_, n = (c[(op, s)]["catch_up"] for s in ("pgfanout", "native"))
            log(f"  after the {op} run, the replicas caught up in: pgfanout {f_:.1f} s, native {n:.1f} s")
        for op in ("insert", "update"):
            if (op, "untracked") in c:
                log(f"  WAL per single-row {op}: " + ", ".join(
                    f"{s} {c[(op, s)]['wal']:,.0f} B" for s in ("untracked", "capture", "pgfanout", "native")
                    if (op, s) in c))
    if ("latency", "native") in R:
        log()
        log(f"latency: {b.args.latency_n} single-row transactions 20 ms apart, writer's commit "
            f"(clock_timestamp() in the INSERT) to the row's apply on a replica (replica default column)")
        f_, n = R[("latency", f"fo{best}")], R[("latency", "native")]
        log(f"{'':<22}{'pgfanout --pack ' + str(best):>20}{'native LR':>12}{'ratio':>8}  target")
        for k in ("p50", "p99", "max"):
            tgt = "< 50 ms " + ("met" if f_[k] < 50 else "NOT met") if k == "p99" else ""
            log(f"{k + ' ms':<22}{f_[k]:>20.1f}{n[k]:>12.1f}{f_[k] / n[k] if n[k] else 0:>7.2f}x  {tgt}")
        if ("latency loaded", "native") in R:
            f_, n = R[("latency loaded", f"fo{best}")], R[("latency loaded", "native")]
            for k in ("p50", "p99", "max"):
                log(f"{k + ' ms, under load':<22}{f_[k]:>20.1f}{n[k]:>12.1f}{f_[k] / n[k] if n[k] else 0:>7.2f}x")

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
    for pack, hwm in sorted(b.pub_peak.items()):
        log(f"  publisher --pack {pack}: peak RSS (VmHWM) {hwm:.1f} MiB")
    for d in b.listeners:
        m = d.mem()
        log(f"  {d.name}: peak RSS (VmHWM) {m.get('VmHWM', 0):.1f} MiB, RSS now {m.get('VmRSS', 0):.1f} MiB "
            f"after {b.changes_through_listeners:,} changes in this run")
    if ("volume", "rss") in R:
        samples = R[("volume", "rss")]
        log(f"  RSS (MiB) and the outbox while 1,000,000 changes flow through (pgfanout --pack {best}, bulk, "
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

    log()
    log("CPU per change, microseconds (each change applied to 2 replicas): less sensitive to the other load")
    log("on this machine than rows/s; a saturated machine divides its cores by these")
    groups = [("writers", ("pg: writers' sessions",)),
              ("ship", ("pgfanout-publisher", "pg: publisher's session", "rabbitmq (beam)", "pg: walsenders (native)")),
              ("apply", ("pgfanout-listener1", "pgfanout-listener2", "pg: listeners' sessions", "pg: apply workers (native)"))]
    log(f"{'run':<44}{'writers':>9}{'ship':>9}{'apply':>9}{'total':>9}{'others':>8}   ship / apply detail")
    walls = {title: wall for title, wall, _ in b.cpu_tables}
    for title, changes, d in b.per_change:
        per = 1e6 / changes
        sums = [sum(d.get(k, 0) for k in keys) * per for _, keys in groups]
        others = d.get("(processes not of this bench)", 0) / (walls[title] * NPROC) * 100
        detail = ", ".join(f"{k} {v * per:.0f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])
                           if any(k in keys for _, keys in groups[1:]) and v * per >= 1)
        log(f"{title:<44}" + "".join(f"{x:>9.0f}" for x in sums) + f"{sum(sums):>9.0f}{others:>7.0f}%   {detail}")
    log("  (others: share of the machine's CPU taken by processes that are not the bench's during that run)")
    log()
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
    ap.add_argument("--full", action="store_true", help="also push 1,000,000 changes and sample RSS")
    ap.add_argument("--only", default="bulk,updates,cost,latency",
                    help="workloads to run, comma-separated (bulk,updates,cost,latency)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument("--update-rows", type=int, default=100_000)
    ap.add_argument("--cost-seconds", type=int, default=10, help="pgbench seconds per primary-cost variant")
    ap.add_argument("--cost-rounds", type=int, default=2,
                    help="split each primary-cost variant into this many alternating runs (default 2)")
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--log-dir", help="where the publisher's and listeners' logs go (default: a new /tmp dir)")
    ap.add_argument("--timeout", type=float, default=240, help="bound on every wait, seconds")
    args = ap.parse_args()
    packs = [int(p) for p in args.packs.split(",")]
    only = set(args.only.split(","))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)

    b = Bench(args)
    atexit.register(Daemon.stop_all)
    started = time.monotonic()
    try:
        b.machine()
        log(f"run: workloads {sorted(only)}, packs {packs}, full={args.full}, "
            f"{args.rows:,} bulk rows, {args.updates:,} updates")
        b.setup()
        best = packs[-1]
        if "bulk" in only:
            log("bulk: 1,000-row INSERT transactions (one session, DO loop with COMMIT)")
            for p in packs:
                b.results[("bulk", f"fo{p}")] = b.bulk("pgfanout", p)
            b.results[("bulk", "native")] = b.bulk("native")
        if "updates" in only:
            log(f"updates: pgbench -c 4 -j {min(4, NPROC)}, single-row UPDATE by primary key, random ids "
                f"over {args.update_rows:,} rows")
            for p in packs:
                b.results[("updates", f"fo{p}")] = b.updates("pgfanout", p)
            b.results[("updates", "native")] = b.updates("native")
        # The best setting: the one whose worse throughput ratio to native is highest.
        scored = []
        for p in packs:
            ratios = [b.results[(w, f"fo{p}")]["rate"] / b.results[(w, "native")]["rate"]
                      for w in ("bulk", "updates") if (w, f"fo{p}") in b.results]
            if ratios:
                scored.append((min(ratios), p))
        if scored:
            best = max(scored)[1]
        log(f"best pgfanout setting: --pack {best}")
        if "cost" in only:
            log(f"primary cost: pgbench -c 4, {args.cost_seconds} s per variant in {args.cost_rounds} alternating runs "
                f"(A B C D, D C B A, ...)")
            b.results[("cost", "all")] = b.cost(best)
        if "latency" in only:
            log(f"latency: {args.latency_n} single-row INSERTs 20 ms apart")
            b.results[("latency", f"fo{best}")] = b.latency("pgfanout", best)
            b.results[("latency", "native")] = b.latency("native")
            log("latency under load: the same while pgbench -c 4 inserts single rows as fast as it can")
            b.results[("latency loaded", f"fo{best}")] = b.latency("pgfanout", best, under_load=True)
            b.results[("latency loaded", "native")] = b.latency("native", under_load=True)
        if args.full:
            log("volume: 1,000,000 bulk-inserted rows through pgfanout, RSS sampled every 100,000")
            r = b.bulk("pgfanout", best, rows=1_000_000, sample_rss=True)
            b.results[("volume", "rss")] = r["rss_samples"]
            b.results[("volume", "rate")] = r["rate"]
            b.results[("volume", "outbox")] = r["outbox"]
        b.stop_publisher()
        report(b, packs, best)
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

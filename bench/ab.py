#!/usr/bin/env python3
"""A/B experiments on the primary cost, for finding out what a change to pgfanout buys.

bench.py measures one build; this runs several publisher builds (or settings) and reference
variants in alternating order (A B C, C B A, ...) on the same servers, so that load from
other work on a shared machine weighs on all of them alike, and prints per run what
bench.py does not: the writers' and the chain's CPU per transaction, WAL bytes per
transaction, how often the publisher went idle (writers NOTIFY while it is), listener
commits, and on request the latency under that load, the writers' wait events,
pg_stat_statements, pg_waldump statistics and perf profiles.

    eval "$(PGFANOUT_RUN_DIR=/tmp/run scripts/servers.sh env)"    # servers started before
    python3 bench/ab.py --bins base=/tmp/base/bin,new=build-bench/bin \\
        --variants untracked,capture,base,new --ops insert,update --rounds 3 --probe

--bins names publisher builds: NAME=BINDIR, optionally NAME=BINDIR:VAR=VALUE;VAR=VALUE to
run that build with extra environment. Variants are those names, or:
  untracked   the untracked table (plain_cost)
  native      the published table with both subscriptions streaming
  capture     the tracked table with the publisher stopped (no chain, no NOTIFY)
and a build's name may carry suffixes: +nolis (listeners stopped during the run, so
only the publisher and the broker work), +la (listeners' sessions with
synchronous_commit = off), +nice (every chain process and backend at nice 19).
The listeners are those of the first build. For --ops update the untracked variant is
also run as native in --updates (the updates workload end to end against native).
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

CHAIN = ("pgfanout-publisher", "pg: publisher's session", "rabbitmq (beam)", "pgfanout-listener1",
         "pgfanout-listener2", "pg: listeners' sessions")
SHOWN = CHAIN + ("pgbench / bench driver", "pg: autovacuum", "pg: wal writer, checkpointer, bgwriter",
                 "pg: walsenders (native)", "pg: apply workers (native)")
FLIPS_SQL = "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgfanout.publisher_state'::regclass"
FO1_COMMITS_SQL = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench_fo1'"


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def pct(xs, p):
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Background(threading.Thread):
    """A measuring thread beside pgbench; stop() ends it and waits for it."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopping = False

    def stop(self):
        self.stopping = True
        self.join()


class Probe(Background):
    """One single-row INSERT into fo_lat every 20 ms: the commit-to-apply latency of a
    change among the load (the replica's `arrived` column records the apply)."""

    def __init__(self, bench):
        super().__init__()
        self.b = bench
        for d in [B.PRIMARY] + B.FO_REPLICAS:
            c = bench.db(d)
            c.query("SET session_replication_role = replica")
            c.query("TRUNCATE fo_lat")
            c.query("SET session_replication_role = origin")

    def run(self):
        w = B.Pg(self.b.conninfo(B.PRIMARY, "bench-writer"))
        i, next_at = 0, time.monotonic()
        while not self.stopping:
            i += 1
            w.query(f"INSERT INTO fo_lat VALUES ({i}, 'latency probe', '{{}}', clock_timestamp())")
            next_at += 0.02
            time.sleep(max(0.0, next_at - time.monotonic()))
        w.close()

    def result(self):
        n = int(self.b.db(B.PRIMARY).value("SELECT count(*) FROM fo_lat"))
        self.b.wait_rows(B.FO_REPLICAS, f"SELECT count(*) = {n} FROM fo_lat", 60, 0.05)
        sent = dict(self.b.db(B.PRIMARY).query("SELECT id, extract(epoch FROM ts)::float8 FROM fo_lat"))
        ms = sorted((float(a) - float(sent[i])) * 1000 for r in B.FO_REPLICAS
                    for i, a in self.b.db(r).query("SELECT id, extract(epoch FROM arrived)::float8 FROM fo_lat"))
        return f"  under load: p50 {pct(ms, 50):.1f} p99 {pct(ms, 99):.1f} max {ms[-1]:.1f} ms"


class WaitSampler(Background):
    """The writers' states from pg_stat_activity every 2 ms: where their time goes."""

    def __init__(self, bench):
        super().__init__()
        self.b = bench
        self.counts = {}

    def run(self):
        w = B.Pg(self.b.conninfo(B.PRIMARY, "bench"))
        time.sleep(0.3)
        while not self.stopping:
            for state, etype, event in w.query("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                                               "WHERE application_name = 'pgbench'"):
                k = "running (no wait event)" if state == "active" and etype is None else (
                    f"{etype}:{event}" if etype else state)
                self.counts[k] = self.counts.get(k, 0) + 1
            time.sleep(0.002)
        w.close()

    def result(self):
        total = sum(self.counts.values()) or 1
        return "\n      writers' states: " + ", ".join(
            f"{k} {100 * n / total:.0f}%" for k, n in sorted(self.counts.items(), key=lambda kv: -kv[1])
            if n / total >= 0.01)


class PerfRecorder(Background):
    """perf record -g of the writers' backends for a while, into a file per run."""

    def __init__(self, bench, seconds, path):
        super().__init__()
        self.b, self.seconds, self.path = bench, seconds, path

    def run(self):
        time.sleep(1.0)
        pids = [r[0] for r in self.b.db(B.PRIMARY).query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'")]
        subprocess.run(["perf", "record", "-q", "-F", "1999", "-g", "-o", self.path, "-p", ",".join(pids),
                        "--", "sleep", str(self.seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def result(self):
        return f"\n      perf data: {self.path}"


def waldump_summary(lsn0, lsn1, pgdata, tx):
    out = subprocess.run([f"{B.PGBIN}/pg_waldump", "--stats=record", "-p", os.path.join(pgdata, "pg_wal"),
                          "-s", lsn0, "-e", lsn1], capture_output=True, text=True).stdout
    recs = []
    for line in out.splitlines():
        # type, N (%), record size (%), FPI size (%), combined size (%)
        m = re.match(r"^(\S+/\S+)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)", line)
        if m:
            recs.append((int(m.group(5)), m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))))
    recs.sort(reverse=True)
    return "\n      WAL by record, bytes/tx record+FPI (records/tx): " + ", ".join(
        f"{name} {rec / tx:.0f}+{fpi / tx:.0f} ({n / tx:.2f})" for _, name, n, rec, fpi in recs[:9])


def pgss_summary(b):
    rows = b.db(B.PRIMARY).query(
        "SELECT calls, round(total_exec_time::numeric, 1), round(total_plan_time::numeric, 1), rows, d.datname, "
        "left(regexp_replace(query, '\\s+', ' ', 'g'), 70) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE (d.datname = 'bench_fo1' OR query ~* 'pgfanout\\.(changes|publisher_state)') "
        "AND query !~* 'pg_stat_statements' ORDER BY total_exec_time DESC LIMIT 10")
    return "".join(f"\n      {c:>7} calls {ms:>8} ms exec {pl:>6} ms plan {r:>7} rows  {db}: {q}"
                   for c, ms, pl, r, db, q in rows)


class Experiment:
    def __init__(self, args):
        self.args = args
        self.bins, self.envs = {}, {}
        for spec in args.bins.split(","):
            name, rest = spec.split("=", 1)
            path, _, env = rest.partition(":")
            self.bins[name] = path
            self.envs[name] = dict(kv.split("=", 1) for kv in env.split(";") if kv)
        self.first = next(iter(self.bins))
        self.b = B.Bench(argparse.Namespace(
            bin=self.bins[self.first], log_dir=None, timeout=args.timeout, update_rows=args.update_rows,
            updates=args.updates or 100_000, latency_n=args.latency_n, rows=200_000,
            cost_seconds=args.seconds, cost_rounds=1))
        self.current = None
        self.listeners_async = False
        self.results = {}

    # ----- set-up of a variant
    def use(self, name):
        """The publisher build (and environment) that start_publisher() starts next."""
        if self.current == name:
            return
        self.b.stop_publisher()
        self.b.bindir = self.bins[name]
        for k in {k for e in self.envs.values() for k in e}:
            os.environ.pop(k, None)
        os.environ.update(self.envs[name])
        self.current = name

    def restart_listeners(self):
        for i, d in enumerate(list(self.b.listeners)):
            if d.alive():
                d.stop()
            self.b.listeners[i] = B.Daemon(d.name, d.proc.args, self.b.logdir)

    def set_listeners_async(self, on):
        if self.listeners_async == on:
            return
        for r in B.FO_REPLICAS:
            self.b.db(r).query(f"ALTER DATABASE {r} SET synchronous_commit = {'off' if on else 'on'}")
        self.restart_listeners()
        self.listeners_async = on

    def set_chain_nice(self, nice):
        pids = [d.pid for d in B.Daemon.running] + ([self.b.rabbit_pid] if self.b.rabbit_pid else [])
        pids += [int(r[0]) for r in self.b.db(B.PRIMARY).query(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgfanout-%'")]
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except FileNotFoundError:
                continue
            for tid in tids:
                try:
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                except OSError:
                    pass

    # ----- one timed run
    def run(self, op, label):
        a, b = self.args, self.b
        name, *suffixes = label.split("+")
        self.set_listeners_async("la" in suffixes)
        system = name if name in ("untracked", "native", "capture") else "pgfanout"
        prefix = {"untracked": "plain", "pgfanout": "fo", "capture": "fo", "native": "lr"}[system]
        table = f"{prefix}_cost"
        prefill = a.update_rows if op == "update" else 0
        self.use(name if system == "pgfanout" else self.first)
        b.start_publisher(a.pack)  # reset() waits for an empty outbox
        b.reset(prefix, "cost", prefill=prefill)
        b.native(system == "native")
        if system == "capture":
            b.stop_publisher()
            b.db(B.PRIMARY).query("UPDATE pgfanout.publisher_state SET idle = false")
        if op == "insert":
            b.db(B.PRIMARY).query(f"SELECT setval('{table}_seq', 1000000)")
            script = (f"INSERT INTO {table} VALUES (nextval('{table}_seq'), 'a short line of text', "
                      f"'{{\"n\": 1, \"tag\": \"bench\"}}', now());\n")
        else:
            script = (f"\\set id random(1, {prefill})\n"
                      f"UPDATE {table} SET t = 'updated text', j = '{{\"n\": 2}}', ts = now() WHERE id = :id;\n")
        self.set_chain_nice(19 if "nice" in suffixes else 0)
        time.sleep(1.2)  # the statistics of the reset reach pg_stat_*
        if a.pgss:
            b.db(B.PRIMARY).query("SELECT pg_stat_statements_reset()")
        flips0 = int(b.db(B.PRIMARY).value(FLIPS_SQL))
        commits0 = int(b.db(B.PRIMARY).value(FO1_COMMITS_SQL))
        load = loadavg()
        if "nolis" in suffixes:
            for d in b.listeners:
                d.stop()

        helpers = []
        if a.probe and system == "pgfanout":
            helpers.append(Probe(b))
        if a.waits:
            helpers.append(WaitSampler(b))
        if a.perf:
            os.makedirs(a.perf_dir, exist_ok=True)
            n = len(self.results.get((op, label), []))
            helpers.append(PerfRecorder(b, a.perf, os.path.join(a.perf_dir, f"perf-{op}-{label}-{n}.data")))
        lsn0 = b.db(B.PRIMARY).value("SELECT pg_current_wal_insert_lsn()")
        snap0 = b.cpu_snapshot()
        for h in helpers:
            h.start()
        latency = ""
        if a.rate:
            path = os.path.join(b.work, "ab_rate.sql")
            with open(path, "w") as f:
                f.write(script)
            out = subprocess.run([f"{B.PGBIN}/pgbench", "-n", "-c", "4", "-j", str(min(4, B.NPROC)), "-R", str(a.rate),
                                  "-T", str(a.seconds), "-f", path, b.conninfo(B.PRIMARY, "pgbench")],
                                 capture_output=True, text=True, timeout=a.seconds + a.timeout).stdout
            tps = float(re.search(r"^tps = ([0-9.]+)", out, re.M).group(1))
            latency = f" latency {re.search(r'latency average = ([0-9.]+) ms', out).group(1)} ms"
        else:
            tps = b.pgbench(script, B.PRIMARY, 4, seconds=a.seconds, name=f"ab_{op}_{prefix}")
        for h in helpers:
            h.stop()
        time.sleep(0.5)  # pgbench's backends exit and are reaped (their CPU is then counted)
        snap1 = b.cpu_snapshot()
        lsn1 = b.db(B.PRIMARY).value("SELECT pg_current_wal_insert_lsn()")
        wal = int(b.db(B.PRIMARY).value(f"SELECT '{lsn1}'::pg_lsn - '{lsn0}'::pg_lsn"))
        if "nolis" in suffixes:
            self.restart_listeners()
        if system == "capture":
            b.start_publisher(a.pack)
        time.sleep(1.2)
        flips = int(b.db(B.PRIMARY).value(FLIPS_SQL)) - flips0
        commits = int(b.db(B.PRIMARY).value(FO1_COMMITS_SQL)) - commits0

        d = b.cpu_delta(snap0, snap1)
        wall = snap1["t"] - snap0["t"]
        tx = max(1.0, tps * a.seconds)
        res = {"tps": tps, "writers": d.get("pg: writers' sessions", 0) / tx * 1e6,
               "chain": sum(d.get(k, 0) for k in CHAIN) / tx * 1e6, "wal": wal / tx, "flips": flips}
        self.results.setdefault((op, label), []).append(res)
        busy = sum(x for k, x in d.items() if not k.startswith("(")) / (wall * B.NPROC)
        others = d.get("(processes not of this bench)", 0) / (wall * B.NPROC)
        detail = "\n      " + ", ".join(f"{k.replace('pgfanout-', '').replace('pg: ', '')} {x / tx * 1e6:.0f}"
                                      for k, x in sorted(d.items(), key=lambda kv: -kv[1]) if k in SHOWN)
        for h in helpers:
            detail = (h.result() + detail) if isinstance(h, Probe) else (detail + h.result())
        if a.waldump:
            detail += waldump_summary(lsn0, lsn1, b.pgdata, tx)
        if a.pgss:
            detail += pgss_summary(b)
        B.log(f"  {op:<7} {label:<12} {tps:>7,.0f} tps{latency}  writers {res['writers']:4.0f} us/tx  chain "
              f"{res['chain']:4.0f} us/tx  WAL {res['wal']:5.0f} B/tx  busy {100 * busy:3.0f}%  others "
              f"{100 * others:3.0f}%  idle flag updated {flips:>4}x  fo1 commits {commits:>4}  load {load}{detail}")

    # ----- the sequences
    def alternating(self, variants):
        for r in range(self.args.rounds):
            yield from (variants if r % 2 == 0 else list(reversed(variants)))

    def main(self):
        a, b = self.args, self.b
        variants = a.variants.split(",") if a.variants else ["untracked"] + list(self.bins)
        b.machine()
        b.setup()
        if a.pgss:
            b.db(B.PRIMARY).query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for op in a.ops.split(","):
            for v in self.alternating(variants):
                self.run(op, v)
        B.log("mean over the rounds")
        for (op, v), rs in self.results.items():
            n = len(rs)
            B.log(f"  {op:<7} {v:<12} {sum(x['tps'] for x in rs) / n:>7,.0f} tps  writers "
                  f"{sum(x['writers'] for x in rs) / n:4.0f} us/tx  chain {sum(x['chain'] for x in rs) / n:4.0f} us/tx  "
                  f"WAL {sum(x['wal'] for x in rs) / n:5.0f} B/tx  idle flag updated "
                  f"{sum(x['flips'] for x in rs) / n:,.0f}x  tps by run {' '.join(f'{x:.0f}' for x in (r['tps'] for r in rs))}")
        builds = [v for v in variants if v in self.bins]
        if a.latency:
            for v in self.alternating(builds):
                self.use(v)
                r = b.latency("pgfanout", a.pack)
                B.log(f"  latency {v}: p50 {r['p50']:.1f} p99 {r['p99']:.1f} max {r['max']:.1f} ms")
        if a.updates:
            for v in self.alternating(builds + ["native"]):
                if v == "native":
                    r = b.updates("native")
                else:
                    self.use(v)
                    r = b.updates("pgfanout", a.pack)
                B.log(f"  updates {v}: {r['rate']:,.0f} rows/s (pgbench {r['tps']:,.0f} tps)  load {loadavg()}")
            for title, changes, d in b.per_change:
                per = 1e6 / changes
                B.log(f"  {title}: " + ", ".join(f"{k} {x * per:.0f}" for k, x in sorted(d.items(), key=lambda kv: -kv[1])
                                                if x * per >= 2))
        B.log(f"load average now {loadavg()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bins", required=True, help="NAME=BINDIR[:VAR=VALUE;...],... publisher builds")
    ap.add_argument("--variants", help="comma-separated, in the order of the first round (default: untracked and every build)")
    ap.add_argument("--ops", default="insert,update", help="insert, update (single-row, pgbench -c 4)")
    ap.add_argument("--seconds", type=int, default=5, help="per run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pack", type=int, default=100)
    ap.add_argument("--rate", type=int, default=0, help="pgbench -R: a fixed rate instead of full speed")
    ap.add_argument("--probe", action="store_true", help="latency of a change every 20 ms under the load")
    ap.add_argument("--waits", action="store_true", help="sample the writers' wait events")
    ap.add_argument("--waldump", action="store_true", help="WAL by record type (pg_waldump --stats)")
    ap.add_argument("--pgss", action="store_true",
                    help="pg_stat_statements per run (needs shared_preload_libraries = pg_stat_statements)")
    ap.add_argument("--perf", type=float, default=0, help="perf record the writers' backends this many seconds")
    ap.add_argument("--perf-dir", default="/tmp/pgfanout-ab-perf")
    ap.add_argument("--latency", action="store_true", help="then the latency workload of each build")
    ap.add_argument("--updates", type=int, default=0, help="then the updates workload (this many) of each build and native")
    ap.add_argument("--update-rows", type=int, default=100_000)
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=240)
    exp = Experiment(ap.parse_args())
    try:
        exp.main()
    finally:
        B.Daemon.stop_all()
        try:
            if getattr(exp.b, "native_on", False):
                exp.b.native(False)
        except Exception:  # the servers may be gone already
            pass
        for c in exp.b.conns.values():
            c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

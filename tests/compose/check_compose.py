#!/usr/bin/env python3
"""Checks docker-compose.yml and the files it uses, as far as that is possible without a
Docker engine:

- the YAML parses; every service has an image or a build; depends_on names exist;
  every long-running service has a health check;
- every file or directory the compose file mounts (secrets too), builds from or the
  Dockerfile copies exists in the repository;
- every pgfanout flag used in a command exists in the program's --help output (the built
  programs in build/bin are required), and every PGFANOUT_* variable used is one the public
  interface lists and the program reads;
- host names in connection URLs and Prometheus targets are services of the file, and
  Prometheus scrapes the port each program serves its metrics on;
- RabbitMQ's boot definitions declare every listener's queue, dead-letter queue and
  binding, for a user the programs log in as;
- the Grafana dashboard parses, uses the provisioned data source, and shows exactly the
  documented metrics, each of which the programs really serve.

The same checks run on docker-compose.yml alone and on it merged with
docker-compose.cluster.yml (the 3-node RabbitMQ variant), merged as `docker compose -f
docker-compose.yml -f docker-compose.cluster.yml` merges them; for that variant, queues
may also be declared by the one-shot docker/rabbitmq/declare-queues.sh.

Run from anywhere: python3 tests/compose/check_compose.py. PGFANOUT_BUILD_DIR chooses the
build directory (default: build). Exits 1 if any check fails.
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("PGFANOUT_BUILD_DIR", ROOT / "build"))
PROGRAMS = ("pgfanout-publisher", "pgfanout-listener")

# The metrics the dashboard must show (and may show), by program.
METRICS = {
    "pgfanout_publisher_changes_published_total": "counter",
    "pgfanout_publisher_outbox_depth": "gauge",
    "pgfanout_publisher_oldest_change_age_seconds": "gauge",
    "pgfanout_publisher_confirm_latency_seconds": "histogram",
    "pgfanout_publisher_reconnects_total": "counter",
    "pgfanout_publisher_last_shipped_change_id": "gauge",
    "pgfanout_listener_changes_applied_total": "counter",
    "pgfanout_listener_dead_letters_total": "counter",
    "pgfanout_listener_batch_size": "histogram",
    "pgfanout_listener_apply_duration_seconds": "histogram",
    "pgfanout_listener_lag_seconds": "gauge",
    "pgfanout_listener_reconnects_total": "counter",
}


class Failure(Exception):
    pass


def load_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise Failure(f"{path.relative_to(ROOT)} does not parse: {e}") from e


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise Failure(f"{path.relative_to(ROOT)} does not parse: {e}") from e


# The variants checked: the files merged in order, as docker compose -f A -f B does.
VARIANTS = [
    ("docker-compose.yml", ["docker-compose.yml"]),
    ("docker-compose.yml + docker-compose.cluster.yml", ["docker-compose.yml", "docker-compose.cluster.yml"]),
]
_files = VARIANTS[0][1]
_compose = None


def volume_target(v):
    if isinstance(v, dict):
        return v.get("target")
    parts = str(v).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge(base, override, key=None):
    """Compose's merge of an override file into a base: mappings merge key by key,
    volumes merge by their target, other sequences and scalars are replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if key == "volumes" and isinstance(base, list) and isinstance(override, list):
        out = {volume_target(v): v for v in base}
        out.update({volume_target(v): v for v in override})
        return list(out.values())
    return override


def compose():
    global _compose
    if _compose is None:
        merged = {}
        for name in _files:
            doc = load_yaml(ROOT / name)
            if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
                raise Failure(f"{name} has no services mapping")
            merged = merge(merged, doc)
        _compose = merged
    return _compose


def services():
    return compose()["services"]


def command_words(value):
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(w) for w in value]


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def program_of(service):
    """The pgfanout program a service runs, or None."""
    words = command_words(service.get("entrypoint")) + command_words(service.get("command"))
    program = os.path.basename(words[0]) if words else None
    return program if program in PROGRAMS else None


_help = {}


def help_text(program):
    if program not in _help:
        binary = BUILD / "bin" / program
        if not os.access(binary, os.X_OK):
            raise Failure(f"{binary} is missing: build first (scripts/build.sh)")
        run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
        if run.returncode != 0:
            raise Failure(f"{program} --help exited {run.returncode}: {run.stderr.strip()}")
        _help[program] = run.stdout
    return _help[program]


def help_flags(program):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text(program)))


def help_env(program):
    # Env:NAME is CLI11's mark of an option's variable; a variable that is not one option's
    # value (PGFANOUT_AMQP_PASSWORD) is named in its option's description.
    return set(re.findall(r"(PGFANOUT_[A-Z0-9_]+)", help_text(program)))


def documented_env():
    """PGFANOUT_* variables of the public interface: README's configuration table, and
    INTERFACE.md too where a copy is at hand (the repository root or ../shared)."""
    sources = [ROOT / "README.md"] + [p for p in (ROOT / "INTERFACE.md", ROOT.parent / "shared" / "INTERFACE.md") if p.is_file()]
    names = None
    for path in sources:
        found = set(re.findall(r"`(PGFANOUT_[A-Z0-9_]+)`", path.read_text(encoding="utf-8")))
        if not found:
            raise Failure(f"{path} lists no PGFANOUT_* variables")
        names = found if names is None else names & found
    return names


def metrics_port(service):
    env = environment(service)
    address = env.get("PGFANOUT_METRICS", "")
    words = command_words(service.get("command"))
    for i, w in enumerate(words):
        if w == "--metrics" and i + 1 < len(words):
            address = words[i + 1]
        elif w.startswith("--metrics="):
            address = w.split("=", 1)[1]
    return address.rsplit(":", 1)[1] if ":" in address else None


# ---------------------------------------------------------------------------------------
# The checks. Each returns a list of problems (empty: passed) or raises Failure.


def check_services():
    problems = []
    for name, s in services().items():
        if not isinstance(s, dict):
            problems.append(f"service {name} is not a mapping")
            continue
        if not s.get("image") and not s.get("build"):
            problems.append(f"service {name} has neither image nor build")
        deps = s.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services():
                problems.append(f"service {name} depends on {dep}, which is not a service")
        if s.get("restart") not in ("no", False):  # YAML 1.1 reads a bare `no` as false
            test = (s.get("healthcheck") or {}).get("test")
            if not test or test == ["NONE"]:
                problems.append(f"service {name} runs for good but has no health check")
    return problems


def check_files():
    problems = []

    def need(path_text, what):
        path = (ROOT / path_text).resolve()
        if path_text.startswith("/"):
            problems.append(f"{what}: '{path_text}' is not a path relative to the repository")
        elif not path.exists():
            problems.append(f"{what}: {path_text} does not exist")
        elif ROOT not in path.parents and path != ROOT:
            problems.append(f"{what}: {path_text} is outside the repository")
        return path

    secrets = compose().get("secrets") or {}
    for name, secret in secrets.items():
        if "file" in secret:
            need(secret["file"], f"secret {name}")
    for name, s in services().items():
        for used in s.get("secrets") or []:
            used = used if isinstance(used, str) else used.get("source")
            if used not in secrets:
                problems.append(f"service {name} uses secret {used}, which the file does not define")
        for v in s.get("volumes") or []:
            if isinstance(v, dict):
                if v.get("type") == "bind":
                    need(v.get("source", ""), f"service {name} mounts")
            elif v.split(":", 1)[0].startswith((".", "/")):
                need(v.split(":", 1)[0], f"service {name} mounts")
        for env_file in [s["env_file"]] if isinstance(s.get("env_file"), str) else s.get("env_file") or []:
            need(env_file, f"service {name} env_file")
        build = s.get("build")
        if build:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            ctx = need(context, f"service {name} builds from")
            df = ctx / dockerfile
            if not df.is_file():
                problems.append(f"service {name}: {df.relative_to(ROOT)} does not exist")
                continue
            copied = set()
            for line in df.read_text(encoding="utf-8").splitlines():
                words = line.split()
                if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
                    for src in [w for w in words[1:-1] if not w.startswith("--")]:
                        copied.add(src.rstrip("/"))
                        if not (ctx / src).exists():
                            problems.append(f"{df.relative_to(ROOT)} copies {src}, which does not exist")
            # The image builds without tests (tests/fuzz only with PGFANOUT_FUZZ=ON); every
            # other directory CMake adds must be there.
            cmake = (ctx / "CMakeLists.txt").read_text(encoding="utf-8") if (ctx / "CMakeLists.txt").is_file() else ""
            for sub in re.findall(r"add_subdirectory\(\s*([\w./-]+)", cmake):
                if sub.split("/")[0] != "tests" and sub not in copied and "." not in copied:
                    problems.append(f"{df.relative_to(ROOT)} does not copy {sub}/, which CMakeLists.txt builds")
    return problems


def check_flags():
    problems = []
    for name, s in services().items():
        program = program_of(s)
        if not program:
            continue
        known = help_flags(program)
        for w in command_words(s.get("command")):
            if w.startswith("--"):
                flag = w.split("=", 1)[0]
                if flag not in known:
                    problems.append(f"service {name}: {program} has no flag {flag} (see its --help)")
    return problems


def check_env():
    problems = []
    documented = documented_env()
    for name, s in services().items():
        program = program_of(s)
        used = set(environment(s)) | set(re.findall(r"PGFANOUT_[A-Z0-9_]+", yaml.safe_dump(s)))
        for var in sorted(v for v in used if v.startswith("PGFANOUT_")):
            if var not in documented:
                problems.append(f"service {name}: {var} is not a variable of the public interface")
            elif program and var not in help_env(program):
                problems.append(f"service {name}: {program} does not read {var} (see its --help)")
        for var, value in environment(s).items():
            for url in re.findall(r"[a-z]+://[^\s,]+", value):
                host = urlsplit(url).hostname
                if host and host not in services() and host not in ("localhost", "127.0.0.1"):
                    problems.append(f"service {name}: {var} names host {host}, which is not a service")
    return problems


def check_prometheus():
    problems = []
    mounted = [s for s in services().values() if any("prometheus.yml" in str(v) for v in s.get("volumes") or [])]
    if not mounted:
        return ["no service mounts docker/prometheus/prometheus.yml"]
    config = load_yaml(ROOT / "docker" / "prometheus" / "prometheus.yml")
    scraped = set()
    for job in config.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                host, _, port = target.rpartition(":")
                scraped.add(host)
                if host not in services():
                    problems.append(f"prometheus job {job.get('job_name')}: target {target} is not a service")
                elif metrics_port(services()[host]) != port:
                    problems.append(f"prometheus scrapes {target}, but {host} serves metrics on port {metrics_port(services()[host])}")
    for name, s in services().items():
        if program_of(s) and metrics_port(s) and name not in scraped:
            problems.append(f"service {name} serves metrics that prometheus does not scrape")
    return problems


def mounted_source(target):
    """The repository file that some service mounts at `target`."""
    for s in services().values():
        for v in s.get("volumes") or []:
            if volume_target(v) == target:
                return ROOT / (v.get("source") if isinstance(v, dict) else str(v).split(":")[0])
    raise Failure(f"no service mounts a file at {target}")


def script_declarations():
    """Queues and bindings that docker/rabbitmq/declare-queues.sh declares, for the
    services that run it (QUEUES names the queues): (queues by name, bindings)."""
    queues, bindings = {}, set()
    script_path = ROOT / "docker" / "rabbitmq" / "declare-queues.sh"
    for s in services().values():
        if not any("declare-queues.sh" in str(v) for v in s.get("volumes") or []):
            continue
        script = script_path.read_text(encoding="utf-8").replace("\\\n", " ")
        for q in environment(s).get("QUEUES", "").split():
            for suffix, args in re.findall(r'declare queue name="\$q(\.dead)?" durable=true\s+arguments=\'(\{[^\']*\})\'', script):
                queues[q + suffix] = {"name": q + suffix, "durable": True, "auto_delete": False,
                                      "arguments": json.loads(args)}
            for source in re.findall(r'declare binding source=(\S+) destination="\$q"', script):
                bindings.add((source, q))
    return queues, bindings


def check_rabbitmq_definitions():
    problems = []
    definitions = load_json(mounted_source("/etc/rabbitmq/pgfanout-definitions.json"))
    queues = {q["name"]: q for q in definitions.get("queues", [])}
    users = {u["name"] for u in definitions.get("users", [])}
    bindings = {(b["source"], b["destination"]) for b in definitions.get("bindings", [])}
    exchanges = {e["name"]: e for e in definitions.get("exchanges", [])}
    script_queues, script_bindings = script_declarations()
    queues.update(script_queues)
    bindings |= script_bindings
    for name, s in services().items():
        program = program_of(s)
        if not program:
            continue
        env = environment(s)
        for url in env.get("PGFANOUT_AMQP_URL", "amqp://guest@x").split(","):
            user = unquote(urlsplit(url.strip()).username or "guest")
            if user not in users:
                problems.append(f"service {name} logs in to RabbitMQ as {user}, a user the definitions do not create")
        exchange = env.get("PGFANOUT_EXCHANGE", "pgfanout")
        if exchange not in exchanges or exchanges[exchange].get("type") != "topic" or not exchanges[exchange].get("durable"):
            problems.append(f"service {name}: exchange {exchange} is not declared as a durable topic exchange")
        if program != "pgfanout-listener":
            continue
        queue = env.get("PGFANOUT_QUEUE")
        # The listener declares its queue durable with x-single-active-consumer and the
        # dead-letter queue durable, both with x-queue-type quorum under
        # --queue-type quorum (and without it for classic); a declaration that differs
        # makes the listener's fail (PRECONDITION_FAILED).
        typed = {"x-queue-type": "quorum"} if env.get("PGFANOUT_QUEUE_TYPE") == "quorum" else {}
        q = queues.get(queue)
        if not q or not q.get("durable") or q.get("auto_delete") or q.get("arguments") != {"x-single-active-consumer": True, **typed}:
            problems.append(f"service {name}: queue {queue} is not declared durable with x-single-active-consumer {typed or ''}")
        d = queues.get(f"{queue}.dead")
        if not d or not d.get("durable") or d.get("auto_delete") or (d.get("arguments") or {}) != typed:
            problems.append(f"service {name}: queue {queue}.dead is not declared durable with arguments {typed}")
        if (exchange, queue) not in bindings:
            problems.append(f"service {name}: queue {queue} is not bound to exchange {exchange}")
    return problems


def dashboard_metrics():
    dashboard = load_json(ROOT / "docker" / "grafana" / "dashboards" / "pgfanout.json")
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dashboard)
    used = {}
    for e in exprs:
        for m in re.findall(r"\bpgfanout_[a-z0-9_]+", e):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if base != m and METRICS.get(base) == "histogram":
                used.setdefault(base, set()).add(m)
            else:
                used.setdefault(m, set()).add(m)
    return dashboard, exprs, used


def check_dashboard():
    problems = []
    dashboard, exprs, used = dashboard_metrics()
    if not exprs:
        return ["the dashboard has no queries"]
    for m in sorted(set(used) - set(METRICS)):
        problems.append(f"the dashboard uses {m}, which is not a documented metric")
    for m in sorted(set(METRICS) - set(used)):
        problems.append(f"the dashboard does not show {m}")
    for m, forms in used.items():
        if METRICS.get(m) == "histogram" and m in forms:
            problems.append(f"the dashboard uses histogram {m} without _bucket/_sum/_count")
    sources = load_yaml(ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uids = {d.get("uid") for d in sources.get("datasources", [])}
    for panel in dashboard.get("panels", []):
        ds = panel.get("datasource")
        if panel.get("type") != "row" and (not isinstance(ds, dict) or ds.get("uid") not in uids):
            problems.append(f"panel '{panel.get('title')}' does not use a provisioned data source")
    providers = load_yaml(ROOT / "docker" / "grafana" / "provisioning" / "dashboards" / "pgfanout.yml")
    grafana = [s for s in services().values() if "grafana" in str(s.get("image", ""))]
    mounts = {str(v).split(":")[1] for s in grafana for v in s.get("volumes") or [] if "grafana/dashboards" in str(v)}
    for p in providers.get("providers", []):
        if p.get("options", {}).get("path") not in mounts:
            problems.append(f"dashboard provider path {p.get('options', {}).get('path')} is not where docker/grafana/dashboards is mounted")
    return problems


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_metrics(program, args):
    """Starts the program against servers that are not there and reads its /metrics."""
    port = free_port()
    binary = BUILD / "bin" / program
    help_text(program)
    proc = subprocess.Popen([binary, *args, "--metrics", f"127.0.0.1:{port}", "--log-level", "off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
                types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
                # The endpoint is up a moment before the program has described its
                # metrics: an empty page is not the answer yet.
                if types:
                    return types
                raise OSError("no metrics described yet")
            except OSError:
                if proc.poll() is not None:
                    raise Failure(f"{program} exited {proc.returncode} before serving metrics: {proc.stderr.read().strip()}")
                if time.monotonic() > deadline:
                    raise Failure(f"{program} did not serve /metrics on port {port} within 15 s")
                time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def check_served_metrics():
    problems = []
    nowhere_pg = "host=127.0.0.1 port=1 connect_timeout=2"
    nowhere_amqp = "amqp://guest:guest@127.0.0.1:1/%2f"
    served = {}
    served.update(served_metrics("pgfanout-publisher", ["--source", nowhere_pg, "--amqp", nowhere_amqp]))
    served.update(served_metrics("pgfanout-listener", ["--target", nowhere_pg, "--queue", "check_compose", "--amqp", nowhere_amqp]))
    _, _, used = dashboard_metrics()
    for m in sorted(used):
        if m not in served:
            problems.append(f"the dashboard uses {m}, which the programs do not serve")
        elif METRICS.get(m) and served[m] != METRICS[m]:
            problems.append(f"{m} is served as a {served[m]}, documented as a {METRICS[m]}")
    return problems


CHECKS = [
    ("compose services, images, depends_on, health checks", check_services),
    ("mounted and copied files exist", check_files),
    ("pgfanout flags exist in --help", check_flags),
    ("PGFANOUT_* variables and service host names", check_env),
    ("prometheus scrapes every metrics endpoint", check_prometheus),
    ("rabbitmq definitions match the listeners", check_rabbitmq_definitions),
    ("grafana dashboard shows the documented metrics", check_dashboard),
    ("the programs serve the dashboard's metrics", check_served_metrics),
]


def main():
    global _files, _compose
    passed = failed = 0
    for variant, files in VARIANTS:
        _files, _compose = files, None
        print(f"== {variant}")
        for title, check in CHECKS:
            try:
                problems = check()
            except Failure as e:
                problems = [str(e)]
            except Exception as e:  # a broken file shape is a failure of the check, not a crash
                problems = [f"{type(e).__name__}: {e}"]
            problems = list(dict.fromkeys(problems))  # services sharing a build report once
            if problems:
                failed += 1
                print(f"FAIL {title}")
                for p in problems:
                    print(f"     - {p}")
            else:
                passed += 1
                print(f"ok   {title}")
    print(f"check_compose: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

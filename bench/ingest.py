"""Usage ingestion: events/s through POST /api/v1/usage/events ÷ rows/s of a plain COPY of the same rows.

Needs PostgreSQL (DATABASE_URL=postgres://…): it measures the COPY fast path, and its
baseline is PostgreSQL's own COPY. Sets up a fresh installation (a dedicated database),
migrates, creates a tenant with deployments that report token usage externally and a
service token with `usage:write`, and starts gunicorn. Every batch is built and encoded
before anything is timed.

Each round: several concurrent clients post batches of 1,000 CloudEvents (10 % of them
duplicates — repeats within the batch and events of the client's previous batch), each on
a new connection, as fast as the server answers; then one psycopg client COPYs the same
new rows, already encoded in COPY text format, into a table made with
`CREATE TABLE … (LIKE billing_usageevent INCLUDING ALL)` — the same columns, indexes and
unique constraint — in one COPY and one transaction. Rounds alternate the two, so drift and
other load on the machine fall on both alike.

Every event must be accounted for: each answer's accepted + duplicates + rejected = the
events sent, nothing is rejected, the accepted add up to the distinct events, and at the
end the table holds each distinct event once and the rollups equal the raw totals (SQL).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bench.common import (
    BenchEnvironment,
    BenchmarkFailed,
    GunicornServer,
    Target,
    exit_status,
    machine_facts,
    print_header,
    print_table,
    print_verdict,
    run_guarded,
)

TARGET = Target(">=", 0.5)
PATH = "/api/v1/usage/events"
BASELINE_TABLE = "bench_copy_baseline"
COLUMNS = "source, event_id, type, tenant_id, deployment_id, time, billing_period, data, received_at"
HOW_TO_READ = (
    "the endpoint moves this share of what PostgreSQL's own COPY moves into the same table shape on the "
    "same machine — with HTTP, authentication, JSON decoding, per-event validation, deduplication by "
    "(source, id) and the hourly rollups on top; 0.5 allows the whole service to cost as much again as the "
    "bare COPY. Higher is better."
)

# Run inside `manage.py shell`: the deployments (external token source) and the service token.
SETUP_SCRIPT = """
import json
from scheduler.estimator import Slo, Traffic
from scheduler.services import deployment_create, fleet_import_file, model_create
from tenants.context import system_actor
from tenants.models import Tenant
from tenants.services import service_token_create

fleet_import_file("scheduler/data/demo_fleet.yaml")
tenant = Tenant.objects.get(public_id="{tenant}")
actor = system_actor(tenant)
model = model_create(actor=actor, name="bench-model", template="llama-3.1-8b")
traffic = Traffic(requests_per_s=1, input_tokens=512, output_tokens=256, input_tokens_p95=1024, output_tokens_p95=512)
deployments = [deployment_create(actor=actor, name=f"bench-{{n}}", model=model,
                                 slo=Slo(ttft_p95_ms=2000, tpot_p95_ms=100), traffic=traffic,
                                 token_usage_source="external") for n in range({count})]
_token, plaintext = service_token_create(name="bench ingest", scopes=["usage:write"])
print(json.dumps({{"deployments": [[str(d.public_id), d.pk, d.tenant_id] for d in deployments],
                  "token": plaintext}}))
"""


def add_arguments(parser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of HTTP and COPY (default 3)")
    parser.add_argument("--batches", type=int, default=12,
                        help="batches each client posts per round (default 12)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (default 4)")
    parser.add_argument("--workers", type=int, default=4,
                        help="gunicorn sync workers (default 4: two per core on the 2-core reference machine)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch (default 1000, the maximum)")
    parser.add_argument("--duplicates", type=float, default=0.10,
                        help="share of each batch that repeats an event already sent (default 0.10)")
    parser.add_argument("--deployments", type=int, default=4, help="deployments the events are spread over (4)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the events (default 7)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (server log)")


def run(args) -> int:
    url = os.environ.get("DATABASE_URL", "")
    if urllib.parse.urlsplit(url).scheme not in {"postgres", "postgresql", "pgsql"}:
        print("python -m bench ingest needs PostgreSQL: set DATABASE_URL=postgres://… (it measures the COPY fast "
              "path against PostgreSQL's own COPY; a dedicated database is created and dropped).", file=sys.stderr)
        return 2
    if min(args.rounds, args.batches, args.clients, args.workers, args.deployments) < 1 \
            or not 1 <= args.batch_size <= 1000 or not 0 <= args.duplicates < 0.5:
        print("python -m bench ingest: counts must be positive, --batch-size at most 1000, --duplicates below 0.5",
              file=sys.stderr)
        return 2
    return run_guarded(_run, args, on_interrupt="server stopped, temporary data removed")


# --- the workload ---------------------------------------------------------------------------------


@dataclass
class Batch:
    body: bytes
    sent: int
    new_rows: list[bytes]  # COPY text rows of the events this batch sends first (the baseline's rows)


@dataclass
class Workload:
    """Per round, per client: the batches to post. Built once, before anything is timed."""

    rounds: list[list[list[Batch]]]
    distinct: int = 0

    def round_rows(self, number: int) -> list[bytes]:
        return [row for client in self.rounds[number] for batch in client for row in batch.new_rows]


def build_workload(args, deployments: list[list], *, now: datetime, extra_rounds: int = 1) -> Workload:
    """`extra_rounds` warm-up rounds first (posted, accounted for, not timed)."""
    rng = random.Random(args.seed)
    repeats = round(args.batch_size * args.duplicates)
    fresh = args.batch_size - repeats
    rounds = []
    previous: dict[int, list[dict]] = {}
    distinct = 0
    for _number in range(args.rounds + extra_rounds):
        clients = []
        for client in range(args.clients):
            batches = []
            for _ in range(args.batches):
                new = [_event(rng, client, deployments, now) for _ in range(fresh)]
                distinct += len(new)
                # Half of the repeats from this batch, half from the client's previous batch (stored already).
                earlier = previous.get(client) or new
                again = rng.sample(new, repeats - repeats // 2) + rng.sample(earlier, repeats // 2)
                events = new + again
                rng.shuffle(events)
                rows = [_copy_row(event, deployments, now) for event in new]
                batches.append(Batch(json.dumps({"events": events}, separators=(",", ":")).encode(), len(events),
                                     rows))
                previous[client] = new
            clients.append(batches)
        rounds.append(clients)
    return Workload(rounds=rounds, distinct=distinct)


def _event(rng: random.Random, client: int, deployments: list[list], now: datetime) -> dict:
    deployment = deployments[rng.randrange(len(deployments))]
    time = now - timedelta(seconds=rng.uniform(60, 3000))
    return {"specversion": "1.0", "id": uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            "source": f"gateway/bench-{client}", "type": "inference.request", "subject": deployment[0],
            "time": time.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "data": {"input_tokens": rng.randint(20, 4000), "output_tokens": rng.randint(1, 1200),
                     "ttft_ms": round(rng.uniform(40, 900), 1), "e2e_ms": round(rng.uniform(300, 20000), 1)}}


def _copy_row(event: dict, deployments: list[list], now: datetime) -> bytes:
    """The row the service stores for this event, in COPY text format (its JSON has no tabs,
    newlines or backslashes)."""
    _public, deployment_id, tenant_id = next(d for d in deployments if d[0] == event["subject"])
    time = datetime.fromisoformat(event["time"])
    data = json.dumps({**event["data"], "requests": 1}, separators=(",", ":"))
    return (f"{event['source']}\t{event['id']}\t{event['type']}\t{tenant_id}\t{deployment_id}\t{time.isoformat()}\t"
            f"{time:%Y-%m-01}\t{data}\t{now.isoformat()}\n").encode()


# --- HTTP clients -------------------------------------------------------------------------------------


@dataclass
class ClientTally:
    started: float = 0.0
    finished: float = 0.0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failures: list[str] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)


def _post(port: int, token: str, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", PATH, body=body, headers={"Authorization": f"Bearer {token}",
                                                             "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _client(port: int, token: str, batches: list[Batch], go, out) -> None:
    tally = ClientTally()
    go.wait()
    tally.started = time.monotonic()
    for batch in batches:
        try:
            status, raw = _post(port, token, batch.body)
        except OSError as exc:
            tally.failures.append(f"{exc.__class__.__name__}: {exc}")
            continue
        if status != 202:
            tally.failures.append(f"HTTP {status}: {raw[:400].decode(errors='replace')}")
            continue
        answer = json.loads(raw)
        tally.sent += batch.sent
        tally.accepted += answer["accepted"]
        tally.duplicates += answer["duplicates"]
        tally.rejected += answer["rejected"]
        tally.rejections += answer["rejections"][:3]
        if answer["accepted"] + answer["duplicates"] + answer["rejected"] != batch.sent:
            tally.failures.append(f"an answer does not account for its {batch.sent} events: {answer}")
    tally.finished = time.monotonic()
    out.put(tally)


@dataclass
class PhaseTally:
    seconds: float
    sent: int
    accepted: int
    duplicates: int
    rejected: int
    server_cpu_seconds: float | None
    database_cpu_seconds: float | None


def post_round(server: GunicornServer, token: str, clients: list[list[Batch]], database_url: str) -> PhaseTally:
    """All clients post their batches at once; the phase lasts from the first start to the last finish."""
    context = multiprocessing.get_context("fork")
    go, out = context.Event(), context.Queue()
    processes = [context.Process(target=_client, args=(server.port, token, batches, go, out), daemon=True)
                 for batches in clients]
    for process in processes:
        process.start()
    time.sleep(0.2)  # every client is up and waiting
    backends = database_backends(database_url)
    cpu_before, database_before = server.workers_cpu_seconds(), processes_cpu_seconds(backends)
    go.set()
    tallies = [out.get(timeout=600) for _ in processes]
    cpu_after, database_after = server.workers_cpu_seconds(), processes_cpu_seconds(backends)
    for process in processes:
        process.join(timeout=10)
    failures = [failure for tally in tallies for failure in tally.failures]
    if failures or not server.alive():
        raise BenchmarkFailed(f"{len(failures)} batches failed; first ones:\n" + "\n---\n".join(failures[:3])
                              + f"\n--- server log:\n{server.log_tail(20)}")
    rejections = [r for tally in tallies for r in tally.rejections]
    if rejections:
        raise BenchmarkFailed(f"events were rejected, e.g. {rejections[:3]}")
    return PhaseTally(seconds=max(t.finished for t in tallies) - min(t.started for t in tallies),
                      sent=sum(t.sent for t in tallies), accepted=sum(t.accepted for t in tallies),
                      duplicates=sum(t.duplicates for t in tallies), rejected=sum(t.rejected for t in tallies),
                      server_cpu_seconds=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
                      database_cpu_seconds=_difference(database_before, database_after))


def _difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def database_backends(database_url: str) -> list[int]:
    """The PostgreSQL server processes serving the benchmark's database (gunicorn's connections
    persist, so after the warm-up these are the ones that will do the work)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        return [pid for pid, in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]


def processes_cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes so far (Linux /proc; PostgreSQL on this host)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# --- the baseline ---------------------------------------------------------------------------------


def copy_baseline(database_url: str, rows: list[bytes]) -> tuple[float, float | None]:
    """(seconds, CPU seconds of its PostgreSQL process) to COPY these encoded rows into the baseline
    table, in one COPY and one commit."""
    import psycopg

    payload = b"".join(rows)
    with psycopg.connect(database_url) as connection:
        backend = [connection.execute("SELECT pg_backend_pid()").fetchone()[0]]
        connection.commit()
        cpu_before = processes_cpu_seconds(backend)
        started = time.perf_counter()
        with connection.cursor() as cursor, cursor.copy(f"COPY {BASELINE_TABLE} ({COLUMNS}) FROM STDIN") as copy:
            for start in range(0, len(payload), 1 << 20):
                copy.write(payload[start:start + (1 << 20)])
        connection.commit()
        seconds = time.perf_counter() - started
        return seconds, _difference(cpu_before, processes_cpu_seconds(backend))


def create_baseline_table(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {BASELINE_TABLE} (LIKE billing_usageevent INCLUDING ALL)")


def check_totals(database_url: str, distinct: int) -> None:
    """Each distinct event stored once; the rollups equal the raw events (summed by PostgreSQL)."""
    import psycopg

    with psycopg.connect(database_url) as connection:
        stored, = connection.execute("SELECT count(*) FROM billing_usageevent").fetchone()
        if stored != distinct:
            raise BenchmarkFailed(f"billing_usageevent holds {stored} events, not the {distinct} distinct ones sent")
        raw = dict(connection.execute(
            "SELECT 'input_tokens', sum((data->>'input_tokens')::numeric) FROM billing_usageevent UNION ALL "
            "SELECT 'output_tokens', sum((data->>'output_tokens')::numeric) FROM billing_usageevent UNION ALL "
            "SELECT 'requests', sum((data->>'requests')::numeric) FROM billing_usageevent").fetchall())
        rolled = dict(connection.execute(
            "SELECT m.slug, sum(r.quantity) FROM billing_usagerollup r JOIN billing_meter m ON m.id = r.meter_id "
            "GROUP BY m.slug").fetchall())
        for slug, total in raw.items():
            if rolled.get(slug) != total:
                raise BenchmarkFailed(f"rollups of {slug} sum to {rolled.get(slug)}, the raw events to {total}")


# --- the run --------------------------------------------------------------------------------------


def _run(args) -> int:
    facts = machine_facts()
    environment = BenchEnvironment(extra_env={"SWITCHYARD_API_RATE_LIMIT": "100000000/minute"}, keep=args.keep)
    with environment:
        metrics_dir = environment.data_dir / "prometheus"
        metrics_dir.mkdir()
        environment.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        server = GunicornServer(environment.env, workers=args.workers, log_dir=environment.data_dir)
        per_round = args.clients * args.batches * args.batch_size
        facts.update({
            "database": environment.database,
            "server": server.description,
            "load": f"{args.clients} concurrent clients (one process each), batches of {args.batch_size} events, "
                    f"{args.duplicates:.0%} duplicates, a new TCP connection per batch",
            "plan": f"1 warm-up round, then {args.rounds} rounds × ({per_round:,} events over HTTP, then their "
                    f"new rows by COPY)",
            "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min) at the start",
        })
        print_header("ingest", facts)
        print("setting up: migrate, tenant, deployments, service token, events …", flush=True)
        environment.manage("migrate", "--noinput")
        tenant = environment.create_tenant()
        setup = json.loads(environment.manage("shell", "-c", SETUP_SCRIPT.format(
            tenant=tenant["tenant"], count=args.deployments)).strip().splitlines()[-1])
        workload = build_workload(args, setup["deployments"], now=datetime.now(UTC))
        database_url = environment.env["DATABASE_URL"]
        create_baseline_table(database_url)
        rounds = []
        with server:
            warmup = post_round(server, setup["token"], workload.rounds[0], database_url)
            copy_baseline(database_url, workload.round_rows(0))
            accepted = warmup.accepted
            for number in range(1, args.rounds + 1):
                http_phase = post_round(server, setup["token"], workload.rounds[number], database_url)
                rows = workload.round_rows(number)
                copy_seconds, copy_cpu = copy_baseline(database_url, rows)
                accepted += http_phase.accepted
                rounds.append((http_phase, len(rows), copy_seconds, copy_cpu))
                subject, baseline = http_phase.sent / http_phase.seconds, len(rows) / copy_seconds
                print(f"round {number}/{args.rounds}: HTTP {subject:,.0f} events/s ({http_phase.sent:,} in "
                      f"{http_phase.seconds:.2f} s), COPY {baseline:,.0f} rows/s ({len(rows):,} in {copy_seconds:.2f} s), "
                      f"ratio {subject / baseline:.3f}", flush=True)
        if accepted != workload.distinct:
            raise BenchmarkFailed(f"{accepted} events accepted, but {workload.distinct} distinct events were sent")
        check_totals(database_url, workload.distinct)
        print(f"\naccounted for: {workload.distinct:,} distinct events accepted once each; the table holds each "
              f"once; rollups = raw totals\n")
    return _report(args, rounds)


def _report(args, rounds) -> int:
    sent = sum(phase.sent for phase, *_ in rounds)
    http_seconds = sum(phase.seconds for phase, *_ in rounds)
    rows = sum(count for _, count, _, _ in rounds)
    copy_seconds = sum(seconds for _, _, seconds, _ in rounds)
    subject, baseline = sent / http_seconds, rows / copy_seconds

    def per_item(values: list, count: int) -> str:
        return "n/a" if None in values else f"{sum(values) / count * 1e6:.1f}"

    workers_cpu = per_item([phase.server_cpu_seconds for phase, *_ in rounds], sent)
    database_cpu = per_item([phase.database_cpu_seconds for phase, *_ in rounds], sent)
    copy_cpu = per_item([cpu for *_, cpu in rounds], rows)
    print_table(["", "what", "per second", "events or rows", "seconds", "CPU µs/event: gunicorn", "PostgreSQL"],
                [["subject", f"POST {args.batch_size}-event batches", f"{subject:,.0f} events",
                  f"{sent:,}", f"{http_seconds:.2f}", workers_cpu, database_cpu],
                 ["baseline", "one COPY per round, one client", f"{baseline:,.0f} rows", f"{rows:,}",
                  f"{copy_seconds:.2f}", "-", copy_cpu]])
    ratios = [(phase.sent / phase.seconds) / (count / seconds) for phase, count, seconds, _ in rounds]
    print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f})")
    print("CPU per event is what each side costs the machine, whatever else runs on it: the subject's "
          "gunicorn workers and PostgreSQL backends, the baseline's one COPY backend (the load generator "
          "and the other processes on the host are not counted).")
    met = print_verdict(figure_name=f"ratio = {subject:,.0f} events/s ÷ {baseline:,.0f} COPY rows/s",
                        figure=subject / baseline, target=TARGET, how_to_read=HOW_TO_READ)
    return exit_status(met, args)

"""API overhead: req/s of an authenticated read (GET /api/v1/tenant) ÷ a bare Django view (GET /healthz).

Sets up a fresh installation (temporary data dir; a dedicated PostgreSQL database when
DATABASE_URL is set, else SQLite; REDIS_URL when set), migrates, creates a tenant and an
API key with `create_tenant`, and starts one gunicorn server that serves both endpoints.
After a warm-up, the two endpoints are measured in alternating rounds (A B, B A, …) with
the same clients, so drift and other load on the machine fall on both alike. Every
response must be a 200; anything else fails the benchmark.

The bare view runs the whole middleware stack and nothing else; the authenticated read
adds what every API request pays: DRF, the API-key lookup and hash check, the scope
check, the rate-limit counter and serialising one row. The rate limit is raised so the
limiter counts but never refuses.
"""

from __future__ import annotations

import json
import statistics
import sys

from bench.common import (
    BenchEnvironment,
    BenchmarkFailed,
    GunicornServer,
    LoadGenerator,
    PhaseResult,
    Target,
    build_request,
    exit_status,
    machine_facts,
    print_header,
    print_table,
    print_verdict,
    request_once,
    run_guarded,
)

TARGET = Target(">=", 0.6)
BASELINE_PATH = "/healthz"
SUBJECT_PATH = "/api/v1/tenant"
HOW_TO_READ = (
    "the authenticated read keeps this share of the bare view's throughput on the same server, so "
    "1/ratio − 1 is what the API layer (key lookup, scope check, rate-limit counter, DRF, serialiser) costs "
    "relative to Django's own per-request floor — 0.6 allows two-thirds of that floor on top; higher is better."
)


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per endpoint, split over the rounds (default 10)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds; each endpoint runs seconds/rounds per round (default 5)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="concurrent closed-loop clients, the same for both endpoints (default 16)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per endpoint first (default 2)")
    parser.add_argument("--workers", type=int, default=4,
                        help="gunicorn workers (default 4: two per core on the 2-core reference machine)")
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"],
                        help="gunicorn worker class (default sync)")
    parser.add_argument("--threads", type=int, default=1, help="threads per gthread worker (default 1)")
    parser.add_argument("--rate-limit", default="100000000/minute",
                        help="SWITCHYARD_API_RATE_LIMIT for the server, high enough never to refuse "
                             "(default 100000000/minute)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (server log, SQLite file)")


def run(args) -> int:
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1 or args.workers < 1:
        print("python -m bench api: --seconds, --rounds, --concurrency and --workers must be positive",
              file=sys.stderr)
        return 2
    return run_guarded(_run, args, on_interrupt="server stopped, temporary data removed")


def _run(args) -> int:
    facts = machine_facts()
    environment = BenchEnvironment(extra_env={"SWITCHYARD_API_RATE_LIMIT": args.rate_limit}, keep=args.keep)
    with environment:
        # Several workers on one host: prometheus_client must share its figures through
        # files, as in production (console/ops.py); both endpoints pay for it alike.
        metrics_dir = environment.data_dir / "prometheus"
        metrics_dir.mkdir()
        environment.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        server = GunicornServer(environment.env, workers=args.workers, worker_class=args.worker_class,
                                threads=args.threads, log_dir=environment.data_dir)
        load = LoadGenerator("127.0.0.1", server.port, args.concurrency)
        round_seconds = args.seconds / args.rounds
        facts.update({
            "database": environment.database,
            "cache": environment.redis,
            "settings": f"{environment.env['DJANGO_SETTINGS_MODULE']}, "
                        f"SWITCHYARD_API_RATE_LIMIT={args.rate_limit}, PROMETHEUS_MULTIPROC_DIR set",
            "server": server.description,
            "load": load.description,
            "plan": f"warm-up {args.warmup:g} s per endpoint, then {args.rounds} alternating rounds × "
                    f"{round_seconds:g} s per endpoint ({args.seconds:g} s each in all)",
        })
        print_header("api", facts)

        print("setting up: migrate, create_tenant, start gunicorn, warm up …", flush=True)
        environment.manage("migrate", "--noinput")
        api_key = environment.create_tenant()["api_key"]
        with server, load:
            baseline_request = build_request("127.0.0.1", server.port, BASELINE_PATH)
            subject_request = build_request("127.0.0.1", server.port, SUBJECT_PATH,
                                            {"Authorization": f"Bearer {api_key}", "Accept": "application/json"})
            _check_once(server, subject_request)

            phases = {BASELINE_PATH: baseline_request, SUBJECT_PATH: subject_request}
            for path, request in phases.items():
                _checked(load.run(request, args.warmup, server), path, server)

            totals = {path: PhaseResult() for path in phases}
            rounds = []
            for number in range(1, args.rounds + 1):
                order = list(phases) if number % 2 else list(reversed(phases))
                this_round = {}
                for path in order:
                    this_round[path] = _checked(load.run(phases[path], round_seconds, server), path, server)
                    totals[path].merge(this_round[path])
                rounds.append(this_round)
                baseline, subject = this_round[BASELINE_PATH].rate, this_round[SUBJECT_PATH].rate
                print(f"round {number}/{args.rounds} ({' then '.join(order)}): {BASELINE_PATH} {baseline:,.0f} req/s, "
                      f"{SUBJECT_PATH} {subject:,.0f} req/s, ratio {subject / baseline:.3f}", flush=True)
        print()
    return _report(args, totals, rounds)


def _check_once(server: GunicornServer, request: bytes) -> None:
    """The key works and the endpoint answers what it should, before measuring anything."""
    status, raw = request_once("127.0.0.1", server.port, request)
    shown = raw[:600].decode(errors="replace")
    if status != 200:
        raise BenchmarkFailed(f"GET {SUBJECT_PATH} answered {status}, not 200:\n{shown}")
    try:
        tenant = json.loads(raw.partition(b"\r\n\r\n")[2])
    except ValueError:
        raise BenchmarkFailed(f"GET {SUBJECT_PATH} did not answer JSON:\n{shown}") from None
    if not isinstance(tenant, dict) or not tenant.get("slug"):
        raise BenchmarkFailed(f"GET {SUBJECT_PATH} answered something other than a tenant:\n{shown}")


def _checked(result: PhaseResult, path: str, server: GunicornServer) -> PhaseResult:
    if not server.alive():
        raise BenchmarkFailed(f"gunicorn died during GET {path}:\n{server.log_tail()}")
    if result.failures:
        samples = "\n---\n".join(result.failure_samples)
        raise BenchmarkFailed(f"GET {path}: {result.failures} of {result.failures + result.ok} responses were not "
                              f"200. First ones:\n{samples}\n--- server log:\n{server.log_tail(15)}")
    if not result.ok:
        raise BenchmarkFailed(f"GET {path}: no request completed in {result.seconds:g} s")
    return result


def _report(args, totals: dict[str, PhaseResult], rounds: list[dict[str, PhaseResult]]) -> int:
    baseline, subject = totals[BASELINE_PATH], totals[SUBJECT_PATH]

    def row(role: str, path: str, result: PhaseResult) -> list[str]:
        server_cpu = result.server_cpu_ms_per_request
        return [role, f"GET {path}", f"{result.rate:,.0f}", f"{result.percentile_ms(0.50):.1f}",
                f"{result.percentile_ms(0.99):.1f}", f"{result.ok:,}",
                "n/a" if server_cpu is None else f"{server_cpu:.2f}",
                f"{result.client_cpu_seconds / result.ok * 1000:.2f}"]

    print_table(["", "endpoint", "req/s", "p50 ms", "p99 ms", "requests", "server CPU ms/req", "client CPU ms/req"],
                [row("baseline", BASELINE_PATH, baseline), row("subject", SUBJECT_PATH, subject)])

    ratios = [r[SUBJECT_PATH].rate / r[BASELINE_PATH].rate for r in rounds]
    print(f"per-round ratios: {', '.join(f'{ratio:.3f}' for ratio in ratios)} "
          f"(median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f})")
    if baseline.server_cpu_ms_per_request and subject.server_cpu_ms_per_request:
        print(f"gunicorn workers' CPU per request, baseline ÷ subject = "
              f"{baseline.server_cpu_ms_per_request / subject.server_cpu_ms_per_request:.3f} (reported, not the "
              f"figure: the same comparison without the load generator's and the database's share of the cores)")
    met = print_verdict(
        figure_name=f"ratio = GET {SUBJECT_PATH} req/s ÷ GET {BASELINE_PATH} req/s "
                    f"= {subject.rate:,.0f} ÷ {baseline.rate:,.0f}",
        figure=subject.rate / baseline.rate, target=TARGET, how_to_read=HOW_TO_READ,
    )
    return exit_status(met, args)

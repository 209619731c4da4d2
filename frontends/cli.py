"""`inference-gateway serve | check | token`: the operator's entry points."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import BreakerPolicy, ConfigurationError, QuotaPolicy, RequestLimits
from frontends import cli_keys
from frontends.assembly import build_gateway
from frontends.drain import CUT_GRACE_SECONDS, serve_draining
from frontends.endpoint_health import HealthPolicy
from frontends.gateway import Gateway
from frontends.identity import (
    StaticKeys,
    build_identity,
    ensure_tokens_file,
    first_token,
    holds_key,
    local_username,
)
from frontends.log_sink import FanOut
from frontends.metrics import MetricsSink
from frontends.quota import InProcessCounters, QuotaCounters
from frontends.replay import add_replay_command, run_replay_command
from frontends.settings import Settings, load_settings
from frontends.shared_responses import SharedResponses
from frontends.status_share import FolderMedium, RedisMedium, StatusShare
from transports import Transport

if TYPE_CHECKING:
    from frontends.store import Store

__all__ = ["command_name", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="inference-gateway",
        description="An OpenAI-compatible gateway in front of many model backends.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the OpenAI API over HTTP (Hypercorn)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000; 0 picks one)")
    serve.add_argument("--fixtures", type=Path, help="folder with clusters.json and endpoints.json")
    serve.add_argument(
        "--loop",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="event loop: asyncio (Quart) or trio (quart-trio, Hypercorn's trio worker)",
    )
    serve.add_argument(
        "--workers", type=int, help="worker processes sharing the port (default 1; setting WORKERS)"
    )
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker's socket
    check = commands.add_parser("check", help="validate fixtures and import every adaptor")
    check.add_argument("fixtures", type=Path, help="folder with clusters.json and endpoints.json")
    commands.add_parser("token", help="print the local user's token from the tokens file")
    usage = commands.add_parser("usage", help="requests and tokens from the request log")
    usage.add_argument("--user", help="only this user's requests")
    usage.add_argument("--model", help="only this model's requests")
    usage.add_argument("--since", help="from this day (YYYY-MM-DD, UTC) or ISO time on")
    usage.add_argument(
        "--by", choices=("user", "model", "day"), default="user", help="one line per (default user)"
    )
    cli_keys.add_parser(commands)
    add_replay_command(commands)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            settings = load_settings(
                host=args.host, port=args.port, fixtures_dir=args.fixtures, workers=args.workers
            )
            if args.listen_fd is None and settings.workers > 1:
                return _serve_workers(settings, loop=args.loop)
            return _serve(settings, loop=args.loop, listen_fd=args.listen_fd)
        if args.command == "check":
            return _check(args.fixtures)
        if args.command == "replay":
            return run_replay_command(args)
        if args.command == "keys":
            return cli_keys.run(args, load_settings())
        if args.command == "usage":
            return _usage(load_settings(), args)
        return _token(load_settings())
    except ConfigurationError as exc:
        print(f"inference-gateway: configuration error: {exc}", file=sys.stderr)
        return 2


def _check(fixtures: Path) -> int:
    gateway = build_gateway(fixtures, identity=StaticKeys(), transport=_transport())
    rows = [("cluster", "framework", "model", "endpoint_slug", "adaptor")]
    for endpoint in gateway.catalog.endpoints:
        rows.append(
            (
                endpoint.cluster,
                endpoint.framework,
                endpoint.model,
                endpoint.endpoint_slug,
                endpoint.endpoint_adapter,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(
        f"\nOK: {len(gateway.catalog.clusters)} cluster(s), "
        f"{len(gateway.catalog.endpoints)} endpoint(s), every adaptor imported."
    )
    return 0


def _usage(settings: Settings, args: argparse.Namespace) -> int:
    from frontends.request_log import RequestLog
    from frontends.store import fetch_usage
    from frontends.usage import parse_since, usage_table

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"inference-gateway: {exc}", file=sys.stderr)
        return 2
    request_log = RequestLog.open(settings.store_url)
    try:
        rows = fetch_usage(
            request_log.store, user=args.user, model=args.model, since=since, by=args.by
        )
    finally:
        request_log.store.close()
    print(usage_table(rows, args.by))
    return 0


def command_name() -> str:
    """How to run this command again from another shell: the bare name only if PATH finds
    this very program (an activated virtualenv, an installed tool), else its full path."""
    program = Path(sys.argv[0])
    if program.name != "inference-gateway":  # python -m frontends.cli
        return f"{shlex.quote(sys.executable)} -m frontends.cli"
    found = shutil.which("inference-gateway")
    if found and Path(found).resolve() == program.resolve():
        return "inference-gateway"
    return shlex.quote(str(program.resolve()))


def _token(settings: Settings) -> int:
    command = command_name()
    token = first_token(settings.tokens_path, settings.local_key_path)
    problem = _token_problem(settings, token, command)
    if problem:
        print(f"inference-gateway: {problem}", file=sys.stderr)
        return 1
    print(token)
    return 0


def _token_problem(settings: Settings, token: str | None, command: str) -> str | None:
    """What is wrong with the local user's key, and what to run; None if nothing."""
    if "static" not in settings.identity_providers:
        return (
            "static API keys are off (identity providers: "
            f"{', '.join(settings.identity_providers)}); use a token from your provider"
        )
    # serve makes a key only with the tokens file it creates; one that exists is the
    # operator's and is left as it is, so a key is then added by hand.
    add = f"`{command} keys add {local_username()}` makes a key now and prints it once"
    if token is None:
        if not settings.tokens_path.exists():
            return f"no key yet: `{command} serve` makes one at its first start, or {add}"
        return (
            f"no key of yours in {settings.local_key_path}, and serve adds none to the "
            f"existing {settings.tokens_path}: {add}"
        )
    if not holds_key(settings.tokens_path, token):
        return (
            f"the key in {settings.local_key_path} is not in {settings.tokens_path} "
            f"(revoked, or the file was replaced): {add}"
        )
    return None


def _transport(settings: Settings | None = None) -> Transport:
    """The one transport of a served gateway: adaptors and identity providers share it,
    with the settings' connection limits and answer cap; `TRANSPORT` picks h11 (the
    default) or httpx.  Both trust the environment's proxy and CA variables, as httpx
    does by default, so a deployment behind a proxy works with either."""
    # Each imported only when chosen: httpx and its dependencies cost an idle worker on
    # h11 about 12 MB it would never use.
    if settings is None:
        from transports.httpx_transport import HttpxTransport

        return HttpxTransport()
    if settings.transport == "h11":
        from transports.h11_transport import H11Transport

        return H11Transport(
            verify=settings.verify_tls,
            trust_env=True,
            limits=settings.connection_limits,
            max_answer_bytes=settings.max_answer_bytes,
        )
    from transports.httpx_transport import HttpxTransport

    return HttpxTransport(
        verify=settings.verify_tls,
        limits=settings.connection_limits,
        max_answer_bytes=settings.max_answer_bytes,
    )


def _quota(settings: Settings) -> tuple[QuotaCounters | None, QuotaPolicy]:
    """The counters quotas are kept in (None: quotas off) and the gateway-wide policy."""
    policy = QuotaPolicy(
        requests_per_minute_per_user=settings.requests_per_minute_per_user,
        default_max_tokens=settings.quota_default_max_tokens,
        # Workers without a shared Redis each count apart: each holds its share.
        shares=settings.workers if settings.redis_url is None else 1,
        share_index=settings.worker_index if settings.redis_url is None else 0,
    )
    if not settings.quotas:
        return None, policy
    if settings.redis_url is None:
        return InProcessCounters(), policy
    from frontends.quota import RedisCounters  # loads redis-py only when it is used

    url = settings.redis_url.get_secret_value()
    return RedisCounters(url, prefix=settings.redis_key_prefix), policy


def _listen(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file="settings",
            field="port",
        ) from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _serve_workers(settings: Settings, *, loop: str) -> int:
    """`serve --workers N`: what must happen once, then N workers (`frontends.workers`)."""
    from frontends.store import Store, migrate_in_child
    from frontends.workers import run_workers

    new_token = None
    if "static" in settings.identity_providers:
        new_token = ensure_tokens_file(settings.tokens_path, settings.local_key_path)
    gateway = build_gateway(settings.fixtures_dir, identity=StaticKeys(), transport=_transport())
    migrate_in_child(settings.store_url)  # once, not by N workers at once
    store = Store.connect(settings.store_url)
    sock = _listen(settings)
    host, port = sock.getsockname()[:2]
    _banner(settings, gateway, f"http://{host}:{port}", new_token, store)
    store.close()
    counted = (
        "in the shared Redis"
        if settings.redis_url is not None
        else "by each worker apart, each holding its part of every limit"
    )
    print(f"  workers: {settings.workers}; quotas counted {counted}", flush=True)
    child_args = ["--loop", loop, "--fixtures", str(settings.fixtures_dir)]
    try:
        return run_workers(settings, sock, workers=settings.workers, child_args=child_args)
    finally:
        sock.close()


def _health(settings: Settings) -> HealthPolicy:
    """Breakers and cluster status as the settings say; served, status is kept fresh."""
    breaker = BreakerPolicy(failures=settings.breaker_failures, cooldown=settings.breaker_cooldown)
    return HealthPolicy(
        breaker=breaker,
        status_ttl=settings.status_ttl,
        refresh_status=True,
        share=_status_share(settings),
    )


def _status_share(settings: Settings) -> StatusShare | None:
    """Where this process shares its readings of cluster status: the replicas' Redis;
    without one, the workers of one `serve` share a folder (their metrics directory);
    a lone process reads for itself."""
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
        return StatusShare(RedisMedium(url, prefix=settings.redis_key_prefix))
    if settings.workers > 1 and settings.metrics_dir is not None:
        return StatusShare(FolderMedium(settings.metrics_dir / "cluster-status"))
    return None


def _serve(settings: Settings, *, loop: str = "asyncio", listen_fd: int | None = None) -> int:
    from hypercorn.config import Config

    from frontends.request_log import RequestLog
    from frontends.store import migrate_in_child
    from frontends.usage import Operators
    from frontends.web.limits import hypercorn_limits

    # No thread or process in this format: `_access_log_to_stderr` leaves them off records.
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    _access_log_to_stderr()
    if settings.uvloop and loop == "asyncio":
        from frontends.event_loop import uvloop_installed

        if not uvloop_installed():
            raise ConfigurationError(
                "uvloop is asked for but not installed: pip install 'inference-gateway[fast]'",
                file="settings",
                field="uvloop",
            )
    new_token = None
    if "static" in settings.identity_providers and listen_fd is None:
        new_token = ensure_tokens_file(settings.tokens_path, settings.local_key_path)
    transport = _transport(settings)
    identity = build_identity(settings, transport=transport)
    metrics = _metrics(settings)
    quota, policy = _quota(settings)
    gateway = build_gateway(
        settings.fixtures_dir,
        identity=identity,
        transport=transport,
        stream_usage=settings.stream_usage,
        stream_observer=metrics,
        quota=quota,
        quota_policy=policy,
        capture_limit=settings.capture_chars,
        request_limits=RequestLimits(
            max_json_depth=settings.max_json_depth, max_messages=settings.max_messages
        ),
        health=_health(settings),
        timeouts=settings.backend_timeouts,
        # Records go to the metrics, the request log and the access log (the app adds
        # those two), not to a logger line of their own: stderr has the access log.
        log_sink=FanOut(metrics),
    )
    if settings.redis_url is not None:  # replicas find each other's stored responses
        gateway.responses = SharedResponses(
            settings.redis_url.get_secret_value(),
            prefix=settings.redis_key_prefix,
            ttl=settings.response_ttl,
        )
    migrate_in_child(settings.store_url)  # Alembic never loaded by a serving process
    request_log = RequestLog.open(settings.store_url, capture_limit=settings.capture_chars)
    metrics.log_queue, metrics.quota = request_log, quota  # read when scraped
    batch_parts = _batch_parts(settings, gateway, request_log.store)
    if listen_fd is None:
        sock = _listen(settings)
    else:
        from frontends.workers import inherited_socket

        sock = inherited_socket(listen_fd)
    replicas = _join_replicas(settings, request_log.store)
    host, port = sock.getsockname()[:2]
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # ours, not a second handler
    for name, value in hypercorn_limits(settings.max_header_bytes).items():
        setattr(config, name, value)  # heads over our limit reach the app's OpenAI 431
    config.keep_alive_timeout = settings.keep_alive_seconds
    # Hypercorn's grace outlasts the drain, so requests cut at its end can still answer.
    config.graceful_timeout = settings.drain_seconds + CUT_GRACE_SECONDS
    if listen_fd is None:  # a worker's parent printed it
        _banner(settings, gateway, f"http://{host}:{port}", new_token, request_log.store)
    token = settings.metrics_token
    app_options = {
        "metrics": metrics,
        "metrics_token": None if token is None else token.get_secret_value(),
        **batch_parts,
        "request_log": request_log,
        "operators": Operators.of(settings.operators),
        "max_body_bytes": settings.max_body_bytes,
        "max_header_bytes": settings.max_header_bytes,
        "replicas": replicas,
        "status_window": settings.status_window_seconds,
        "freeze_startup_heap": True,
    }
    try:
        if loop == "trio":
            _serve_trio(gateway, config, app_options, settings.drain_seconds)
        else:
            _serve_asyncio(
                gateway, config, app_options, settings.drain_seconds, uvloop=settings.uvloop
            )
    finally:
        metrics.close()
        request_log.store.close()  # closed when the log stopped; again if it never ran
    sock.detach()  # Hypercorn closed the listening socket it was handed
    return 0


def _metrics(settings: Settings) -> MetricsSink:
    """The served gateway's metrics: this process's own, or with `metrics_dir` the shared
    files of several workers (before any metric exists, so all of them go there)."""
    return MetricsSink(multiprocess_dir=settings.metrics_dir)


def _join_replicas(settings: Settings, store: Any) -> Any:
    """This server's row among the replicas in its database, once it is sure it may serve
    beside the ones already there (`frontends.store.check_can_join`)."""
    from frontends.store import Replicas, check_can_join

    replicas = Replicas(
        store.engine,
        replica_id=settings.replica_id,
        shared_quota=settings.redis_url is not None or not settings.quotas,
    )
    check_can_join(replicas, sqlite=settings.store_url.startswith("sqlite"))
    replicas.beat()
    return replicas


def _batch_parts(settings: Settings, gateway: Gateway, store: Store) -> dict[str, Any]:
    """The files and batches API and the built-in runner (with the delegated batches'
    watcher), on the request log's store (one engine, one connection pool, for the one
    database)."""
    from frontends.batch_delegation import BatchDelegation
    from frontends.batch_runner import BatchRunner
    from frontends.batches import Batches, BatchLimits
    from frontends.store import BatchStore

    batch_store = BatchStore(store.engine)
    limits = BatchLimits(
        max_file_bytes=settings.batch_max_file_bytes,
        max_lines=settings.batch_max_lines,
        max_active=settings.batch_max_active,
        concurrency=settings.batch_concurrency,
    )
    batches = Batches(gateway, batch_store, limits=limits)
    if not settings.batch_runner:  # another worker of this server runs them
        return {"batches": batches}
    delegation = BatchDelegation(
        gateway,
        batch_store,
        work_dir=settings.batch_work_dir or settings.state_dir / "batch-jobs",
        poll_seconds=settings.batch_poll_seconds,
    )
    lease = settings.batch_lease_seconds
    runner = BatchRunner(
        gateway,
        batch_store,
        concurrency=limits.concurrency,
        lease_seconds=lease,
        poll_interval=min(1.0, lease / 4),  # renewed well within the lease
        delegation=delegation,
    )
    return {"batches": batches, "batch_runner": runner}


def _access_log_to_stderr() -> None:
    """The access log as bare JSON lines on stderr (one per request), not prefixed.

    No record of the process is given its thread, thread name, process or process name
    (the logging docs' own optimisation): each is looked up anew for every record, and
    the access log makes one per request, yet no format `serve` installs shows them
    (this handler's and `_serve`'s `basicConfig`'s; a format that wants them must undo
    this)."""
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    access = logging.getLogger("inference_gateway.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_MessageOnly("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False


class _MessageOnly(logging.Formatter):
    """`%(message)s`: the record's message as it is, without the general formatter's
    steps (the time check, the style's substitution, the exception and stack checks)
    on every access line; a record that carries an exception or a stack still gets
    them."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        return record.getMessage()


def _serve_asyncio(
    gateway: Gateway,
    config: Any,
    app_options: dict[str, Any],
    drain_seconds: float,
    *,
    uvloop: bool = False,
) -> None:
    from hypercorn.asyncio import serve

    from frontends.event_loop import run_asyncio
    from frontends.web import create_app

    async def run() -> None:
        app = create_app(gateway, **app_options)
        await serve_draining(
            lambda stop: serve(app, config, shutdown_trigger=stop), gateway.drain, drain_seconds
        )

    run_asyncio(run, uvloop=uvloop)


def _serve_trio(
    gateway: Gateway, config: Any, app_options: dict[str, Any], drain_seconds: float
) -> None:
    """The same app and Gateway on trio: the Quart class and the worker differ, and each
    `send()` is shielded so that connections close (see `frontends.web.access.AccessLog`)."""
    import trio
    from hypercorn.trio import serve
    from quart_trio import QuartTrio

    from frontends.web import create_app

    async def run() -> None:
        app = create_app(gateway, app_class=QuartTrio, shield_sends=True, **app_options)
        await serve_draining(
            lambda stop: serve(app, config, shutdown_trigger=stop), gateway.drain, drain_seconds
        )

    trio.run(run)


def _banner(
    settings: Settings, gateway: Gateway, url: str, new_token: str | None, store: Any
) -> None:
    command = command_name()
    models = sorted({e.model for e in gateway.catalog.endpoints})
    lines = [
        f"inference-gateway serving the OpenAI API on {url}/v1",
        f"  fixtures: {settings.fixtures_dir} ({len(gateway.catalog.clusters)} cluster(s), "
        f"{len(models)} model(s): {', '.join(models)})",
        f"  tokens:   {settings.tokens_path}",
    ]
    if new_token:
        lines.append(
            f"  your token (new, for {local_username()}; also `{command} token`): {new_token}"
        )
    else:
        token = first_token(settings.tokens_path, settings.local_key_path)
        problem = _token_problem(settings, token, command)
        lines.append(f"  your token: {problem or f'`{command} token` prints it'}")
    example = models[0] if models else "MODEL"
    lines += [
        "  serving in the foreground (Ctrl-C stops it); try, in a second terminal:",
        f"    curl {url}/v1/chat/completions \\",
        f'      -H "Authorization: Bearer $({command} token)" \\',
        f'      -H \'Content-Type: application/json\' -d \'{{"model": "{example}", '
        '"messages": [{"role": "user", "content": "Hello"}]}\'',
    ]
    capturing = f", capturing {settings.capture_limit} chars" if settings.capture_bodies else ""
    lines.append(f"  request log: {store!r}{capturing}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())

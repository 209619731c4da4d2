"""A local scale-out topology: N gateway replicas on loopback ports behind nginx, sharing
the machine's PostgreSQL (request log, usage, files, batches) and Redis (quotas).

    python -m deploy.topology --replicas 2 --port 8080

starts everything in the foreground (Ctrl-C stops it) and prints the URL and a key.
Tests use `running_topology` directly.  The nginx configuration comes from
`deploy/nginx.conf.in`, the one template a real deployment copies too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import attrs

__all__ = ["Replica", "Topology", "nginx_config", "running_topology"]

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name("nginx.conf.in")
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/inference_gateway"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class Replica:
    """One gateway replica: its own process, port, state folder and log."""

    name: str
    port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: the replica dies at once, as a crashed machine would."""
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, and its exit code once it has drained."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@attrs.frozen
class Topology:
    url: str  # nginx
    replicas: Sequence[Replica]


def nginx_config(folder: Path, listen: int, upstreams: Sequence[int]) -> str:
    """The template with this topology's replicas, port and (local-only) paths."""
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in upstreams
    )
    local = f"daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/nginx-error.log warn;"
    temp = "\n".join(
        f"    {kind}_temp_path {folder}/{kind}-temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = TEMPLATE.read_text()
    text = text.replace("@LOCAL_ONLY@", local)
    text = text.replace("http {\n", "http {\n" + temp + "\n", 1)
    text = text.replace("@ACCESS_LOG@", "off")
    text = text.replace("@UPSTREAMS@", servers)
    return text.replace("@LISTEN@", f"127.0.0.1:{listen}")


def _wait_for_port(port: int, process: subprocess.Popen[str], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            ended = f"{what} exited with {process.returncode}"
            raise RuntimeError(f"{ended}: {log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within 60 s")


def _start_replica(
    name: str, folder: Path, env: Mapping[str, str], fixtures: Path | None
) -> Replica:
    port = free_port()
    log = folder / f"{name}.log"
    command = [sys.executable, "-m", "frontends.cli", "serve", "--port", str(port)]
    if fixtures is not None:
        command += ["--fixtures", str(fixtures)]
    replica_env = {**env, "INFERENCE_GATEWAY_STATE_DIR": str(folder / name)}
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=replica_env, stdout=subprocess.PIPE, stderr=out, text=True
        )
    assert process.stdout is not None
    banner = process.stdout.readline()
    if not re.search(r"on (http://\S+)/v1", banner):
        process.kill()
        process.wait()
        raise RuntimeError(f"replica {name} did not start: {banner}{log.read_text()[-3000:]}")
    # The rest of the banner is read (and dropped) so that the pipe never fills.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    return Replica(name=name, port=port, process=process, log=log)


@contextmanager
def running_topology(
    folder: Path,
    *,
    replicas: int = 2,
    database_url: str,
    redis_url: str,
    tokens_file: Path,
    fixtures: Path | None = None,
    port: int | None = None,
    settings: Mapping[str, str] | None = None,
    environ: Sequence[Mapping[str, str]] = (),
) -> Iterator[Topology]:
    """Replicas sharing `database_url` and `redis_url`, behind nginx on `port` (one the OS
    picks when None).  `settings` are more INFERENCE_GATEWAY_* settings, named without
    the prefix; `environ`, more environment variables for each replica in turn (an API
    key the fixtures name, say).  Everything is stopped (SIGTERM, then SIGKILL) on the
    way out."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise RuntimeError("nginx is not installed: apt-get install nginx")
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_GATEWAY_")}
    env.update(
        PYTHONPATH=str(ROOT),
        INFERENCE_GATEWAY_DATABASE_URL=database_url,
        INFERENCE_GATEWAY_REDIS_URL=redis_url,
        INFERENCE_GATEWAY_TOKENS_FILE=str(tokens_file),
        **{f"INFERENCE_GATEWAY_{k.upper()}": v for k, v in (settings or {}).items()},
    )
    started: list[Replica] = []
    with ExitStack() as stack:

        def stop_all() -> None:
            for replica in started:
                if replica.process.poll() is None:
                    replica.process.send_signal(signal.SIGTERM)
            for replica in started:
                try:
                    replica.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    replica.kill()

        stack.callback(stop_all)
        # The first replica migrates the database before the others start.
        for index in range(replicas):
            own = {**env, **(environ[index] if index < len(environ) else {})}
            started.append(_start_replica(f"replica-{index + 1}", folder, own, fixtures))
        listen = port or free_port()
        conf = folder / "nginx.conf"
        conf.write_text(nginx_config(folder, listen, [r.port for r in started]))
        log = folder / "nginx.log"
        with log.open("w") as out:
            proxy = subprocess.Popen(
                [nginx, "-c", str(conf), "-p", str(folder)], stdout=out, stderr=out, text=True
            )

        def stop_nginx() -> None:
            proxy.send_signal(signal.SIGQUIT)
            try:
                proxy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()

        stack.callback(stop_nginx)
        _wait_for_port(listen, proxy, "nginx", log)
        yield Topology(url=f"http://127.0.0.1:{listen}", replicas=started)


def _ensure_database(url: str) -> None:
    """Creates the database `url` names on its server when it does not exist yet."""
    import sqlalchemy as sa

    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            ).first()
            if exists is None:
                connection.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.topology", description=__doc__)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--fixtures", type=Path, help="default: the built-in demo catalog")
    args = parser.parse_args(argv)
    from frontends.identity import ensure_tokens_file

    if args.database_url.startswith("postgresql"):
        _ensure_database(args.database_url)
    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _: stopping.append(number))
    with tempfile.TemporaryDirectory(prefix="igw-topology-") as tmp:
        folder = Path(tmp)
        tokens = folder / "tokens.json"
        key = ensure_tokens_file(tokens)
        with running_topology(
            folder,
            replicas=args.replicas,
            database_url=args.database_url,
            redis_url=args.redis_url,
            tokens_file=tokens,
            fixtures=args.fixtures,
            port=args.port,
        ) as topology:
            ports = ", ".join(str(r.port) for r in topology.replicas)
            print(
                f"{args.replicas} replicas (ports {ports}) behind nginx on {topology.url}/v1\n"
                f"  key: {key}\n  logs: {folder}\n  Ctrl-C stops everything",
                flush=True,
            )
            while not stopping:
                signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

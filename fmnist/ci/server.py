"""A tracking server for a team, on this machine: PostgreSQL (Debian's package) as MLflow's backend
store and `mlflow server` proxying the artifacts, both on loopback only, started and stopped together.

`fmnist server start` initialises the database cluster on first use (in `--dir`, default
`.fmnist/server`), starts PostgreSQL and the MLflow server, waits until both answer and prints the
tracking URI; `fmnist server stop` stops both. As root, PostgreSQL runs as the `postgres` user (it
refuses root). A team's shared server is the same two commands on a host the team can reach, with
`--host` naming its address and a password in the database URI (docs/ci.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fmnist.core.errors import ConfigError, FmnistError

log = logging.getLogger("fmnist")
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
DB_USER, DB_NAME = "fmnist", "mlflow"
STATE = "server.json"
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "true"}


@dataclass(frozen=True)
class Server:
    dir: str
    host: str
    port: int  # MLflow
    pg_port: int
    pid: int  # the MLflow server's process group

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backend_uri(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.pg_port}/{DB_NAME}"


def pg_tool(name: str) -> str:
    found = shutil.which(name) or next((str(d / name) for d in PG_BIN_DIRS if (d / name).exists()), None)
    if found is None:
        raise ConfigError(f"PostgreSQL's {name} is not installed; install it with `apt-get install postgresql` "
                          "(`make setup` does)")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["?"])[-1]
        raise FmnistError(f"{what} failed: {last}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def start_postgres(pgdata: Path, port: int) -> None:
    if os.geteuid() == 0:
        shutil.chown(pgdata.parent, "postgres")
    if not (pgdata / "PG_VERSION").is_file():
        pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pgdata, "postgres")
        # trust on loopback only: the server listens on 127.0.0.1 and a socket in its own directory
        _run(_as_postgres([pg_tool("initdb"), "-D", str(pgdata), "-U", DB_USER, "--auth=trust", "-E", "UTF8"]),
             "initdb" + (" (as the postgres user, which must be able to enter every folder above --dir)"
                         if os.geteuid() == 0 else ""))
        fresh = True
    else:
        fresh = False
    _run(_as_postgres([pg_tool("pg_ctl"), "-D", str(pgdata), "-l", str(pgdata / "server.log"), "-w", "-t", "60",
                       "-o", f"-h 127.0.0.1 -p {port} -k {pgdata}", "start"]), "pg_ctl start")
    if fresh:
        _run(_as_postgres([pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, DB_NAME]),
             "createdb")


def stop_postgres(pgdata: Path) -> None:
    if (pgdata / "postmaster.pid").is_file():
        _run(_as_postgres([pg_tool("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]), "pg_ctl stop")


def _wait_for(url: str, proc: subprocess.Popen, seconds: float, log_file: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text().strip().splitlines()[-1:] if log_file.is_file() else ["?"]
            raise FmnistError(f"mlflow server exited ({proc.returncode}): {tail[0]}; see {log_file}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise FmnistError(f"mlflow server did not answer {url} within {seconds:.0f} s; see {log_file}")


def start(directory: Path, host: str = "127.0.0.1", port: int = 5000, pg_port: int = 5433,
          workers: int = 2) -> Server:
    """Start both processes; for a server already started from `directory`, start again whichever of the two
    died (with the ports it recorded), and refuse only when both are up."""
    directory = directory.resolve()
    if (directory / STATE).is_file():
        return restart_dead(status(directory), workers)
    for p in (port, pg_port):
        if _port_in_use(p):
            raise ConfigError(f"port {p} is in use; pick another with --port / --pg-port")
    directory.mkdir(parents=True, exist_ok=True)
    start_postgres(directory / "pgdata", pg_port)
    try:
        server = _start_mlflow(Server(str(directory), host, port, pg_port, 0), workers)
    except FmnistError:
        stop_postgres(directory / "pgdata")
        raise
    log.info("tracking server at %s (PostgreSQL on 127.0.0.1:%d, artifacts in %s)", server.tracking_uri, pg_port,
             directory / "artifacts")
    return server


def restart_dead(server: Server, workers: int = 2) -> Server:
    pgdata = Path(server.dir) / "pgdata"
    pg_up, mlflow_up = postgres_running(pgdata), mlflow_running(server)
    if pg_up and mlflow_up:
        raise ConfigError(f"a server from {server.dir} is already running ({server.tracking_uri}); "
                          f"stop it first: fmnist server stop --dir {server.dir}")
    if not pg_up:
        log.info("PostgreSQL of %s was down: starting it again on 127.0.0.1:%d", server.tracking_uri, server.pg_port)
        start_postgres(pgdata, server.pg_port)
    if not mlflow_up:
        log.info("the MLflow server %s was down: starting it again", server.tracking_uri)
        if _is_mlflow_group(server.pid):  # what is left of it (a worker that outlived its parent, a hung server)
            _kill_group(server.pid)
        server = _start_mlflow(server, workers)
    log.info("tracking server at %s again", server.tracking_uri)
    return server


def postgres_running(pgdata: Path) -> bool:
    if not (pgdata / "PG_VERSION").is_file():
        return False
    return subprocess.run(_as_postgres([pg_tool("pg_ctl"), "-D", str(pgdata), "status"]),
                          capture_output=True).returncode == 0


def mlflow_running(server: Server) -> bool:
    """Its process group exists and it answers; a process that no longer answers counts as dead."""
    try:
        os.killpg(server.pid, 0)
        with urllib.request.urlopen(f"{server.tracking_uri}/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:  # no such process group, refused, timed out
        return False


def _is_mlflow_group(pgid: int) -> bool:
    """The recorded process group still holds an MLflow process (and not someone else's that took its number)."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        try:
            if os.getpgid(proc.pid) == pgid and "mlflow" in " ".join(proc.info["cmdline"] or []):
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def _start_mlflow(server: Server, workers: int) -> Server:
    """Start `mlflow server` for `server`'s folder and ports, wait until it answers, record its process group."""
    directory = Path(server.dir)
    log_file = directory / "mlflow.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", server.backend_uri,
           "--artifacts-destination", str(directory / "artifacts"), "--serve-artifacts",
           "--host", server.host, "--port", str(server.port), "--workers", str(workers)]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **QUIET})
    server = replace(server, pid=proc.pid)
    try:
        _wait_for(f"{server.tracking_uri}/health", proc, 120, log_file)
    except FmnistError:
        _kill_group(proc.pid)
        raise
    (directory / STATE).write_text(json.dumps(asdict(server)))
    return server


def status(directory: Path) -> Server:
    state = directory.resolve() / STATE
    if not state.is_file():
        raise ConfigError(f"no server started from {directory}; start one with: fmnist server start --dir {directory}")
    return Server(**json.loads(state.read_text()))


def _kill_group(pid: int, seconds: float = 20) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)


def stop(directory: Path) -> None:
    server = status(directory)
    _kill_group(server.pid)
    stop_postgres(Path(server.dir) / "pgdata")
    (Path(server.dir) / STATE).unlink()
    log.info("tracking server stopped (%s)", server.tracking_uri)

"""Start, check and stop the local stack; every service on 127.0.0.1, state under one run folder.

Services (each in its own venv or from the machine, see ``scripts/setup.sh``):
- **MiniStack** (S3, Lambda, Step Functions, CloudFormation), ``.venv-ministack``;
- **PostgreSQL 15 + PostGIS** with **pgstac** (``pypgstac migrate``) and queryables;
- **stac-fastapi-pgstac** under uvicorn with the Transactions extension, ``.venv-stacapi``.

``up()`` is idempotent: a service already answering is reused. Ports prefer fixed defaults and fall
back to a free port; the chosen ports live in ``<run>/stack.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ServiceDownError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
DEFAULT_PORTS = {"ministack": 4566, "postgres": 55432, "stacapi": 8081}
DATABASE = "cloudfree"
QUERYABLES = Path(__file__).with_name("queryables.json")


def run_dir() -> Path:
    """The run folder (git-ignored): service state, data and logs."""
    return Path(os.environ.get("CLOUDFREE_RUN_DIR", REPO / ".run")).resolve()


def _venv_bin(name: str, exe: str) -> str:
    env = os.environ.get(f"CLOUDFREE_{name.upper()}_VENV")
    base = Path(env) if env else REPO / f".venv-{name}"
    path = base / "bin" / exe
    if not path.exists():
        raise ServiceDownError(f"{path} is missing; run `make setup` (scripts/setup.sh) first")
    return str(path)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return 200 <= resp.status < 300
    except Exception:  # noqa: BLE001 - any failure means "not up"
        return False


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:  # not our child: probe it
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _wait(check, what: str, timeout: float, log_file: Path | None = None,
          pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not _alive(pid):
            break
        time.sleep(0.25)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
    raise ServiceDownError(f"{what} is not up (waited up to {timeout:.0f}s); "
                           f"log {log_file}:\n{tail}")


@dataclass
class Endpoints:
    """Where the local services listen."""

    ministack_port: int
    postgres_port: int
    stacapi_port: int

    @property
    def aws_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ministack_port}"

    @property
    def stac_api_url(self) -> str:
        return f"http://127.0.0.1:{self.stacapi_port}"

    @property
    def postgres_dsn(self) -> str:
        return f"postgresql://postgres:postgres@127.0.0.1:{self.postgres_port}/{DATABASE}"

    def environment(self) -> dict[str, str]:
        """Variables that point boto3, the AWS CLI, SAM CLI, GDAL and pystac-client here."""
        return {
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "STAC_API_URL": self.stac_api_url,
            "CLOUDFREE_RUN_DIR": str(run_dir()),
            "SAM_CLI_TELEMETRY": "0",
        }


class LocalStack:
    """The three local services, their state file and their logs."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or run_dir()
        self.logs = self.root / "logs"
        self.state_file = self.root / "stack.json"

    # --- state --------------------------------------------------------------------------------
    def _state(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {}

    def _save(self, state: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=1))

    def _port(self, state: dict, name: str) -> int:
        """The recorded port, else the default if free, else any free port."""
        port = state.get(name, {}).get("port")
        if port:
            return int(port)
        default = DEFAULT_PORTS[name]
        return default if _port_free(default) else _free_port()

    def endpoints(self) -> Endpoints:
        state = self._state()
        if not state:
            raise ServiceDownError("the local stack was never started; run `make up`")
        return Endpoints(state["ministack"]["port"], state["postgres"]["port"],
                         state["stacapi"]["port"])

    # --- up -----------------------------------------------------------------------------------
    def up(self) -> Endpoints:
        """Start every service that is not already answering; return the endpoints."""
        self.logs.mkdir(parents=True, exist_ok=True)
        state = self._state()
        for name in ("ministack", "postgres", "stacapi"):
            state.setdefault(name, {})["port"] = self._port(state, name)
        self._save(state)
        try:
            self._up_ministack(state)
            self._up_postgres(state)
            self._up_stacapi(state)
        finally:
            self._save(state)  # record pids even when a later service fails
        return self.endpoints()

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> int:
        log_file = self.logs / f"{name}.log"
        with open(log_file, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.root)
        return proc.pid

    def _ministack_ok(self, port: int) -> bool:
        return _http_ok(f"http://127.0.0.1:{port}/_ministack/health")

    def _up_ministack(self, state: dict) -> None:
        port = state["ministack"]["port"]
        if self._ministack_ok(port):
            return
        tmp = self.root / "ministack"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "BIND_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
               "MINISTACK_HOST": "127.0.0.1", "IOT_MTLS_ENABLED": "0", "TMPDIR": str(tmp),
               "LAMBDA_WARM_TTL_SECONDS": "30", "S3_DATA_DIR": str(tmp / "s3")}
        for var in ("AWS_ENDPOINT_URL", "VIRTUAL_ENV", "PYTHONPATH"):
            env.pop(var, None)
        state["ministack"]["pid"] = self._spawn("ministack", [_venv_bin("ministack", "ministack")],
                                                env)
        _wait(lambda: self._ministack_ok(port), "MiniStack", 30, self.logs / "ministack.log",
              state["ministack"]["pid"])
        log.info("MiniStack up on 127.0.0.1:%s", port)

    # PostgreSQL refuses to run as root: run its tools as the `postgres` user when we are root.
    def _pg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def _pg_ok(self, port: int) -> bool:
        res = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True)
        return res.returncode == 0

    def _psql(self, port: int, sql: str, db: str = "postgres") -> str:
        res = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                              "-d", db, "-tAc", sql], capture_output=True, text=True)
        if res.returncode:
            raise ServiceDownError(f"psql failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def _up_postgres(self, state: dict) -> None:
        port = state["postgres"]["port"]
        pgroot = self.root / "postgres"
        data = pgroot / "data"
        if not self._pg_ok(port):
            self._start_postgres(pgroot, data, port)
        if self._psql(port, f"SELECT 1 FROM pg_database WHERE datname='{DATABASE}'") != "1":
            self._psql(port, f"CREATE DATABASE {DATABASE}")
        if not state["postgres"].get("migrated"):
            self._migrate(port)
            state["postgres"]["migrated"] = True

    def _start_postgres(self, pgroot: Path, data: Path, port: int) -> None:
        bindir = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
        if not (bindir / "initdb").exists():
            raise ServiceDownError(f"PostgreSQL 15 not found in {bindir}; install postgresql-15")
        pgroot.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pgroot, "postgres", "postgres")
        if not (data / "PG_VERSION").exists():
            self._pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                     "--auth=trust", "--no-sync", "-E", "UTF8")
        opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={pgroot} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        res = self._pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(pgroot / "server.log"),
                       "-o", opts, "-w", "-t", "60", "start", check=False)
        if res.returncode:
            raise ServiceDownError(f"PostgreSQL failed to start: {res.stdout}{res.stderr}\n"
                                   f"see {pgroot / 'server.log'}")
        _wait(lambda: self._pg_ok(port), "PostgreSQL", 30, pgroot / "server.log")
        log.info("PostgreSQL up on 127.0.0.1:%s", port)

    def _migrate(self, port: int) -> None:
        if not Path("/usr/share/postgresql/15/extension/postgis.control").exists():
            raise ServiceDownError("PostGIS is missing: apt-get install postgresql-15-postgis-3 "
                                   "(scripts/setup.sh does it)")
        dsn = Endpoints(0, port, 0).postgres_dsn
        pypgstac = _venv_bin("stacapi", "pypgstac")
        for args in (["migrate", "--dsn", dsn],
                     ["load_queryables", str(QUERYABLES), "--dsn", dsn]):
            res = subprocess.run([pypgstac, *args], capture_output=True, text=True)
            if res.returncode:
                raise ServiceDownError(f"pypgstac {args[0]} failed: {res.stderr[-2000:]}")
        log.info("pgstac migrated, queryables loaded")

    def _stacapi_ok(self, port: int) -> bool:
        return _http_ok(f"http://127.0.0.1:{port}/_mgmt/ping") or _http_ok(
            f"http://127.0.0.1:{port}/")

    def _up_stacapi(self, state: dict) -> None:
        port = state["stacapi"]["port"]
        if self._stacapi_ok(port):
            return
        env = {**os.environ, "PGUSER": "postgres", "PGPASSWORD": "postgres",
               "PGHOST": "127.0.0.1", "PGPORT": str(state["postgres"]["port"]),
               "PGDATABASE": DATABASE, "ENABLE_TRANSACTIONS_EXTENSIONS": "true",
               "WEB_CONCURRENCY": "1"}
        cmd = [_venv_bin("stacapi", "uvicorn"), "--factory", "stac_fastapi.pgstac.app:create_app",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        state["stacapi"]["pid"] = self._spawn("stacapi", cmd, env)
        _wait(lambda: self._stacapi_ok(port), "STAC API", 60, self.logs / "stacapi.log",
              state["stacapi"]["pid"])
        log.info("STAC API up on 127.0.0.1:%s", port)

    # --- health / down ------------------------------------------------------------------------
    def health(self) -> dict[str, dict]:
        """Per service: up or not, where, and how to fix it when down."""
        state = self._state()
        if not state:
            return {"stack": {"up": False, "fix": "run `make up`"}}
        ms, pg, api = (state[n]["port"] for n in ("ministack", "postgres", "stacapi"))
        logs = self.logs
        return {
            "ministack": {"up": self._ministack_ok(ms), "url": f"http://127.0.0.1:{ms}",
                          "fix": f"`make up` restarts it; log: {logs / 'ministack.log'}"},
            "postgres": {"up": self._pg_ok(pg), "url": f"127.0.0.1:{pg}",
                         "fix": "`make up`; log: " + str(self.root / "postgres/server.log")},
            "stacapi": {"up": self._stacapi_ok(api), "url": f"http://127.0.0.1:{api}",
                        "fix": f"needs postgres first; `make up`; log: {logs / 'stacapi.log'}"},
        }

    def require(self) -> Endpoints:
        """The endpoints, or ServiceDownError naming each service that is down and the fix."""
        down = {k: v for k, v in self.health().items() if not v["up"]}
        if down:
            lines = [f"{k} is down ({v.get('url', '')}): {v['fix']}" for k, v in down.items()]
            raise ServiceDownError("local stack not ready:\n  " + "\n  ".join(lines))
        return self.endpoints()

    def down(self) -> None:
        """Stop every service and leave nothing listening on their ports."""
        state = self._state()
        for name in ("stacapi", "ministack"):
            pid = state.get(name, {}).get("pid")
            if pid:
                _kill_group(int(pid))
        data = self.root / "postgres" / "data"
        if (data / "postmaster.pid").exists():
            bindir = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
            self._pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop",
                     check=False)
        for name in ("stacapi", "ministack", "postgres"):
            port = state.get(name, {}).get("port")
            if port:
                _wait(lambda p=port: not _listening(p), f"{name} shutdown", 20)
            state.get(name, {}).pop("pid", None)
        if state:
            self._save(state)


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        for _ in range(40):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def stack() -> LocalStack:
    """The local stack of this checkout (run folder from ``CLOUDFREE_RUN_DIR`` or ``.run/``)."""
    return LocalStack()

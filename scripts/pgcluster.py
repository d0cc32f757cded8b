#!/usr/bin/python3
"""Start and stop PostgreSQL clusters for aidb: throwaway ones for the tests
and benchmarks, a persistent one for the demo and for trying things out.

initdb and postgres refuse to run as root, so when run as root the cluster
belongs to the `postgres` user and every server command runs through runuser.

    scripts/pgcluster.py start [--dir DIR] [--port PORT]   # persistent, prints the psql line
    scripts/pgcluster.py stop  [--dir DIR]

The module is also imported by tests/conftest.py and bench/ (class PgCluster).
"""

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time



def pg_bindir():
    """The server binaries to use: $AIDB_PG_BIN, else the bindir of
    $PG_CONFIG, else of the pg_config first on PATH (scripts/test.sh sets
    PG_CONFIG for each major it tests)."""
    if os.environ.get("AIDB_PG_BIN"):
        return os.environ["AIDB_PG_BIN"]
    pg_config = os.environ.get("PG_CONFIG") or shutil.which("pg_config")
    if not pg_config:
        raise RuntimeError("no PostgreSQL found: set PG_CONFIG (or AIDB_PG_BIN), "
                           "or put pg_config on PATH")
    return subprocess.run([pg_config, "--bindir"], check=True, capture_output=True,
                          text=True).stdout.strip()


PG_BIN = pg_bindir()
DEFAULT_DIR = "/var/tmp/aidb-cluster"
DEFAULT_PORT = 5499

BASE_SETTINGS = {
    "shared_preload_libraries": "'aidb'",
    "max_worker_processes": "32",        # room for a launcher and many pipeline workers
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",                      # throwaway clusters: speed over durability
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "logging_collector": "off",
}


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """One PostgreSQL cluster in `datadir`, owned by the postgres user when run as root."""

    def __init__(self, datadir, port=None, settings=None, bindir=None):
        self.datadir = datadir
        self.bindir = bindir or PG_BIN
        self.port = port or free_port()
        self.settings = {**BASE_SETTINGS, **(settings or {})}
        self.logfile = os.path.join(datadir, "server.log")
        self.os_user = "postgres" if os.geteuid() == 0 else None

    # --- lifecycle -------------------------------------------------------------------

    def init(self):
        """initdb (trust authentication: these clusters listen on loopback only)."""
        os.makedirs(self.datadir, exist_ok=True)
        self._give_to_os_user(self.datadir)
        self._run_server_command("initdb", "-D", self.datadir, "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as conf:
            conf.write("\n# --- aidb ---\n")
            conf.write(f"port = {self.port}\n")
            conf.write(f"unix_socket_directories = '{self.datadir}'\n")
            for key, value in self.settings.items():
                conf.write(f"{key} = {value}\n")

    def start(self, timeout=60):
        self._run_server_command("pg_ctl", "-D", self.datadir, "-l", self.logfile,
                                 "-w", "-t", str(timeout), "start")

    def stop(self, mode="fast"):
        if self.is_running():
            self._run_server_command("pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop")

    def restart(self, mode="fast"):
        self._run_server_command("pg_ctl", "-D", self.datadir, "-l", self.logfile,
                                 "-m", mode, "-w", "restart")

    def is_running(self):
        return os.path.exists(os.path.join(self.datadir, "postmaster.pid"))

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    # --- connecting ------------------------------------------------------------------

    def dsn(self, dbname="postgres", user="postgres"):
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def psql_command(self, dbname="postgres"):
        return f"psql -h 127.0.0.1 -p {self.port} -U postgres {dbname}"

    def psql(self, sql, dbname="postgres"):
        """Run SQL with psql; returns stdout (raises with stderr on failure)."""
        result = subprocess.run(
            [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", dbname, "-c", sql],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def log_text(self):
        with open(self.logfile, errors="replace") as log:
            return log.read()

    # --- helpers ---------------------------------------------------------------------

    def _give_to_os_user(self, path):
        if self.os_user:
            pw = pwd.getpwnam(self.os_user)
            os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(path, 0o700)

    def _run_server_command(self, program, *args):
        command = [os.path.join(self.bindir, program), *args]
        if self.os_user:
            command = ["runuser", "-u", self.os_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd="/")
        if result.returncode != 0:
            log = self.log_text()[-3000:] if os.path.exists(self.logfile) else ""
            raise RuntimeError(f"{program} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}\n{log}")
        return result.stdout


def throwaway_cluster(settings=None, bindir=None):
    """A new, started cluster in a fresh temporary directory."""
    parent = tempfile.mkdtemp(prefix="aidb-test-")
    os.chmod(parent, 0o755)
    cluster = PgCluster(os.path.join(parent, "data"), settings=settings, bindir=bindir)
    cluster.init()
    cluster.start()
    return cluster


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"data directory (default {DEFAULT_DIR})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT})")
    args = parser.parse_args()
    cluster = PgCluster(args.dir, port=args.port)
    if args.action == "stop":
        cluster.stop()
        print(f"stopped the cluster in {args.dir}")
        return
    if args.action == "start":
        if not os.path.exists(os.path.join(args.dir, "PG_VERSION")):
            cluster.init()
        if not cluster.is_running():
            cluster.start()
    state = "running" if cluster.is_running() else "stopped"
    print(f"cluster in {args.dir}: {state}")
    if state == "running":
        print(f"connect with: {cluster.psql_command()}")


if __name__ == "__main__":
    sys.exit(main())

"""Running the external worker in tests: the `aidb worker` command line of
the venv, and aidb.Worker alongside an action."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

AIDB = os.path.join(os.path.dirname(sys.executable), "aidb")   # the venv's console script
CLI_TIMEOUT = 60


def cli_env(extra=None):
    """This environment without AIDB_WORKER_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIDB_WORKER_")}
    return {**env, **(extra or {})}


def run_cli(*args, cwd, env=None):
    """`aidb worker ARGS` to completion, in `cwd` (where a .env would be read)."""
    return subprocess.run([AIDB, "worker", *args], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def start_cli(*args, cwd):
    """`aidb worker ARGS` in the background, its stderr in a file (a pipe
    that nobody reads while it runs could fill up and block it)."""
    stderr_path = cwd / "worker-stderr.log"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen([AIDB, "worker", *args], cwd=cwd, env=cli_env(),
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    process.stderr_path = stderr_path
    return process


def stop_cli(process):
    """SIGTERM (a graceful shutdown); returns (exit status, stderr)."""
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=CLI_TIMEOUT)
    return process.returncode, process.stderr_path.read_text()


async def run_worker_during(worker, action):
    """worker.run() while `action` runs in a thread; then a graceful shutdown.
    Returns (run's exit status, what `action` returned)."""
    run = asyncio.create_task(worker.run())
    try:
        result = await asyncio.to_thread(action)
    finally:
        await worker.request_graceful_shutdown()
    return await asyncio.wait_for(run, timeout=CLI_TIMEOUT), result

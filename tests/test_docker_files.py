"""Checks of the Docker files that need no Docker engine: compose.yaml
parses, images are pinned to a major version, everything they copy or mount
exists, the copied sources build and install with PGXS, and the commands the
images run exist and accept the arguments and settings given to them."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from pgcluster import free_port, throwaway_cluster
from tests.support.common import ROOT, wait_for
from tests.support.external_worker import run_cli

pytestmark = pytest.mark.slow      # builds the images' steps, loads the local model

REPO = Path(ROOT)
DB_DOCKERFILE = REPO / "Dockerfile"
WORKER_DOCKERFILE = REPO / "docker" / "worker.Dockerfile"
# A tag that starts with a major version: 17-bookworm, 3.11-slim (not latest, not bare).
PINNED_TAG = re.compile(r"^\d+(\.\d+)*(-[a-z0-9.]+)*$")


def instructions(path):
    """[(INSTRUCTION, arguments)] of a Dockerfile: comments dropped,
    continuation lines joined."""
    result, continued = [], ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            continued += line[:-1] + " "
            continue
        keyword, _, arguments = (continued + line).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        continued = ""
    return result


def arguments_of(path, keyword):
    return [args for kw, args in instructions(path) if kw == keyword]


def copies(path):
    """[(sources, destination)] of a Dockerfile's COPY instructions."""
    result = []
    for args in arguments_of(path, "COPY"):
        words = json.loads(args) if args.startswith("[") else args.split()
        words = [w for w in words if not w.startswith("--")]
        result.append((words[:-1], words[-1]))
    return result


def exec_form(path, keyword):
    """The JSON (exec) form of the Dockerfile's last CMD or ENTRYPOINT."""
    return json.loads(arguments_of(path, keyword)[-1])


@pytest.fixture(scope="module")
def compose():
    with open(REPO / "compose.yaml") as compose_file:
        return yaml.safe_load(compose_file)


def build_of(service):
    """(context, Dockerfile) of a compose service that is built here."""
    build = service["build"]
    build = build if isinstance(build, dict) else {"context": build}
    context = REPO / build["context"]
    return context, context / build.get("dockerfile", "Dockerfile")


# --- compose.yaml --------------------------------------------------------------------------------

def test_compose_has_db_worker_and_models(compose):
    services = compose["services"]
    assert set(services) == {"db", "worker", "models"}
    assert build_of(services["db"])[1] == DB_DOCKERFILE
    assert build_of(services["worker"])[1] == WORKER_DOCKERFILE
    worker = services["worker"]
    assert worker["depends_on"]["db"] == {"condition": "service_healthy"}
    assert "healthcheck" in services["db"]
    assert "@db:5432/" in worker["environment"]["AIDB_WORKER_DB_URL"]


def test_images_are_pinned_to_a_major_version(compose):
    images = [args.split()[0] for path in (DB_DOCKERFILE, WORKER_DOCKERFILE)
              for args in arguments_of(path, "FROM")]
    images += [s["image"] for s in compose["services"].values() if "image" in s]
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and PINNED_TAG.match(tag), f"{image} is not pinned to a major version"


def test_copied_and_mounted_paths_exist(compose):
    for service in compose["services"].values():
        if "build" in service:
            context, dockerfile = build_of(service)
            assert dockerfile.is_file()
            for sources, _ in copies(dockerfile):
                for source in sources:
                    assert (context / source).exists(), f"{dockerfile.name}: COPY {source}"
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith((".", "/")):     # a bind mount, not a named volume
                assert (REPO / host).exists(), f"mount {host}"


# --- the database image --------------------------------------------------------------------------

def test_dockerfile_preloads_aidb_and_creates_the_extension():
    command = exec_form(DB_DOCKERFILE, "CMD")
    assert command[0] == "postgres"
    assert [command[i + 1] for i, word in enumerate(command) if word == "-c"] == \
        ["shared_preload_libraries=aidb"]
    init_scripts = [REPO / src for sources, dest in copies(DB_DOCKERFILE)
                    if dest.startswith("/docker-entrypoint-initdb.d") for src in sources]
    assert init_scripts
    sql = " ".join(path.read_text() for path in init_scripts)
    assert re.search(r"CREATE EXTENSION (IF NOT EXISTS )?aidb CASCADE;", sql)
    packages = " ".join(arguments_of(DB_DOCKERFILE, "RUN"))
    for package in ("postgresql-$PG_MAJOR-pgvector", "postgresql-plpython3-$PG_MAJOR",
                    "postgresql-server-dev-$PG_MAJOR", "build-essential", "python3-pip"):
        assert package in packages


def copy_build_context(build_dir):
    """The files the Dockerfile copies into its WORKDIR, copied into build_dir
    (a work tree's build artifacts come along, as with `docker build`)."""
    for sources, dest in copies(DB_DOCKERFILE):
        if dest.startswith("/"):
            continue                             # outside the build directory
        for source in map(REPO.joinpath, sources):
            if source.is_dir():                  # COPY copies a directory's contents
                shutil.copytree(source, build_dir / dest, dirs_exist_ok=True)
            else:
                target = build_dir / dest / source.name if dest.endswith("/") else build_dir / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target)


def postgresql_17_prefix():
    """Where scripts/build-postgres.sh put PostgreSQL 17 (scripts/test.sh
    builds it before any test runs); missing, the test fails under CI."""
    pg_config = subprocess.run([str(REPO / "scripts" / "setup.sh"), "--pg-config"],
                               env={**os.environ, "PG_MAJOR": "17"}, check=True,
                               capture_output=True, text=True).stdout.strip()
    if not os.access(pg_config, os.X_OK):
        message = f"PostgreSQL 17 is not built ({pg_config}): run PG_MAJOR=17 scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(pg_config).parent.parent


@pytest.fixture
def postgresql_17():
    """A copy of the locally built PostgreSQL 17 (with PL/Python and
    pgvector, as the image's packages provide), so that the test installs
    into a server of its own; PostgreSQL finds its files relative to its
    binaries, so the copy works where it is. Readable by the postgres user."""
    parent = Path(tempfile.mkdtemp(prefix="aidb-docker-"))
    os.chmod(parent, 0o755)
    prefix = parent / "pg17"
    shutil.copytree(postgresql_17_prefix(), prefix, symlinks=True)
    yield prefix
    shutil.rmtree(parent, ignore_errors=True)


def test_dockerfile_builds_a_working_aidb_on_postgresql_17(postgresql_17, tmp_path):
    """The Dockerfile's build step, run as written on what it copies, against
    PostgreSQL 17 (its PG_CONFIG pointed at the local 17); then a server run
    with the image's CMD settings and init script serves a Background pipeline
    on the embedded model and answers retrieve_key."""
    build_dir = tmp_path / "aidb"
    copy_build_context(build_dir)
    (build_step,) = [args for args in arguments_of(DB_DOCKERFILE, "RUN")
                     if "scripts/install-aidb.sh" in args]
    image_env = dict(arg.split("=", 1) for arg in arguments_of(DB_DOCKERFILE, "ENV"))
    assert image_env["PG_CONFIG"] == "/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
    # The engine's dependencies: shared with this machine's other installs
    # (scripts/setup.sh), rather than downloaded again for the copy.
    env = {**os.environ, "PG_CONFIG": str(postgresql_17 / "bin" / "pg_config"),
           "ENGINE_DEPS_ROOT": os.environ.get("ENGINE_DEPS_ROOT", "/opt/aidb-engine-deps")}
    env.pop("TORCH_INDEX_URL", None)
    result = subprocess.run(["bash", "-c", build_step], cwd=build_dir, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"{build_step}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    pkglibdir = subprocess.run([env["PG_CONFIG"], "--pkglibdir"], check=True,
                               capture_output=True, text=True).stdout.strip()
    assert Path(pkglibdir, "aidb.so").is_file()

    command = exec_form(DB_DOCKERFILE, "CMD")
    settings = dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "-c")
    init_sql = " ".join((REPO / src).read_text() for sources, dest in copies(DB_DOCKERFILE)
                        if dest.startswith("/docker-entrypoint-initdb.d") for src in sources)
    server = throwaway_cluster(settings={key: f"'{value}'" for key, value in settings.items()},
                               bindir=str(postgresql_17 / "bin"))
    try:
        assert server.psql("SHOW server_version_num").strip().startswith("17")
        server.psql(init_sql)
        server.psql("""
            CREATE TABLE docs (id integer PRIMARY KEY, body text);
            INSERT INTO docs VALUES (1, 'A kitten sleeps on the sofa.'),
                                    (2, 'Quarterly tax filing deadlines.');
            SELECT aidb.create_pipeline('docs', 'docs', source_data_column => 'body',
                step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config('minilm'),
                auto_processing => 'Background');""")
        wait_for(lambda: server.psql("SELECT count(*) FROM docs_embeddings").strip() == "2",
                 timeout=120, message="the image's background worker to embed docs")
        assert server.psql("SELECT key FROM aidb.retrieve_key('docs', 'a sleepy cat')").strip() == "1"
    finally:
        server.destroy()


# --- the worker image ----------------------------------------------------------------------------

def test_worker_entrypoint_is_the_declared_console_script():
    entrypoint = exec_form(WORKER_DOCKERFILE, "ENTRYPOINT")
    assert entrypoint == ["aidb", "worker"]
    with open(REPO / "python" / "pyproject.toml", "rb") as pyproject:
        scripts = tomllib.load(pyproject)["project"]["scripts"]
    module, _, function = scripts[entrypoint[0]].partition(":")
    # Imported where `pip install ./python` would find it (the repository's
    # root holds aidb.so, which is no Python module).
    check = subprocess.run([sys.executable, "-c", f"from {module} import {function}; "
                            f"assert callable({function})"], cwd=REPO / "python",
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    installs = " ".join(arguments_of(WORKER_DOCKERFILE, "RUN"))
    (copied,) = [dest for sources, dest in copies(WORKER_DOCKERFILE) if sources == ["python"]]
    assert f"pip install --no-cache-dir {copied}" in installs


def test_worker_service_settings_are_understood(compose, tmp_path):
    """`aidb worker` with the worker service's environment (the database
    moved to a closed local port) reads them all and fails only to connect."""
    environment = dict(compose["services"]["worker"]["environment"])
    port = free_port()
    environment["AIDB_WORKER_DB_URL"] = environment["AIDB_WORKER_DB_URL"].replace(
        "@db:5432/", f"@127.0.0.1:{port}/")
    result = run_cli(cwd=tmp_path, env=environment)
    assert result.returncode == 2
    assert result.stderr.startswith("aidb worker: cannot connect to postgresql://postgres:")
    assert f"@127.0.0.1:{port}/aidb" in result.stderr


# --- the models service --------------------------------------------------------------------------

def test_models_service_command_serves_embeddings(compose):
    """The models service's command, run here: its mounted directory mapped
    back to the repository, on loopback and a free port."""
    service = compose["services"]["models"]
    host_dir, container_dir = service["volumes"][0].split(":")[:2]
    port = free_port()
    replacements = {"python": sys.executable, "0.0.0.0": "127.0.0.1", "8000": str(port)}
    command = [replacements.get(word, word.replace(container_dir, str(REPO / host_dir)))
               for word in service["command"]]
    assert Path(command[1]).is_file()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        models = wait_for(lambda: _get_json(f"http://127.0.0.1:{port}/v1/models"),
                          message="the models service to answer")
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert models["object"] == "list"


def _get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)
    except OSError:
        return None

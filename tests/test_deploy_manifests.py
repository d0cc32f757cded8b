"""The example Kubernetes manifests in deploy/kubernetes/ against what they
configure, without a Kubernetes cluster: the worker's flags and
AIDB_WORKER_* variables against the real command-line parser, the probes
against the real metrics server, the HPA's metric against the metrics the
worker really exports, and KEDA's query against a real database whose
pipeline has a backlog."""

import os
import urllib.request

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aidb.worker.cli import build_parser
from aidb.worker.metrics import metrics_registry, serve_metrics
from aidb.worker.stats import WorkerStats
from pgcluster import free_port
from tests.support.common import ROOT
from tests.support.pipeline_checks import create_docs, create_pipeline, insert_docs

DEPLOY = os.path.join(ROOT, "deploy", "kubernetes")
ENV_PREFIX = "AIDB_WORKER_"


def manifests():
    """{kind: document} of every YAML file in deploy/kubernetes/."""
    found = {}
    for name in sorted(os.listdir(DEPLOY)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(DEPLOY, name)) as f:
                for document in yaml.safe_load_all(f):
                    assert document["kind"] not in found, f"two {document['kind']} manifests"
                    found[document["kind"]] = document
    return found


def worker_container():
    (container,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def worker_options():
    """{option string: argparse action} of `aidb worker`."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    return commands.choices["worker"]._option_string_actions


def env_values(container):
    """{name: value} of the container's environment, secrets resolved from secret.yaml."""
    secret = manifests()["Secret"]
    values = {}
    for item in container["env"]:
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            values[item["name"]] = secret["stringData"][ref["key"]]
    return values


def parsed(args, env, monkeypatch):
    """`aidb worker ARGS` parsed with exactly `env` as the AIDB_WORKER_* variables."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return build_parser().parse_args(["worker", *args])


def test_every_manifest_parses_and_is_named():
    found = manifests()
    assert set(found) == {"Secret", "Deployment", "ScaledObject", "HorizontalPodAutoscaler"}
    for kind, document in found.items():
        assert document["apiVersion"] and document["metadata"]["name"], kind
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        assert found[kind]["spec"]["scaleTargetRef"]["name"] == \
            found["Deployment"]["metadata"]["name"]


def test_worker_flags_are_the_clis(monkeypatch):
    container = worker_container()
    options = worker_options()
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        # Exact names only: argparse would also take an abbreviation.
        assert flag in options, f"{arg}: `aidb worker` has no option {flag}"
    args = parsed(container["args"], env_values(container), monkeypatch)
    assert args.pipelines == ["docs"]
    assert args.metrics_host == "0.0.0.0"


def test_worker_environment_variables_are_the_clis(monkeypatch):
    """Each AIDB_WORKER_X names the option --x and gives it the value the flag would."""
    container = worker_container()
    env = env_values(container)
    options = worker_options()
    assert "AIDB_WORKER_DB_URL" in env
    for name, value in env.items():
        assert name.startswith(ENV_PREFIX), name
        flag = "--" + name[len(ENV_PREFIX):].lower().replace("_", "-")
        assert flag in options, f"{name}: `aidb worker` has no option {flag}"
        dest = options[flag].dest
        from_env = getattr(parsed([], {name: value}, monkeypatch), dest)
        from_flag = getattr(parsed([f"{flag}={value}"], {}, monkeypatch), dest)
        assert from_env == from_flag, name


def test_probes_reach_the_metrics_server(monkeypatch):
    container = worker_container()
    args = parsed(container["args"], env_values(container), monkeypatch)
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == args.metrics_port
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(args.metrics_port)
    paths = {annotations["prometheus.io/path"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("metrics", args.metrics_port)
        paths.add(container[probe]["httpGet"]["path"])
    # The real server, on a free port of the loopback: every path the
    # manifests use answers 200 with the worker's metrics.
    server = serve_metrics(WorkerStats(), free_port(), "127.0.0.1")
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for path in paths:
            url = f"http://127.0.0.1:{server.server_port}{path}"
            with opener.open(url, timeout=10) as response:
                assert response.status == 200
                assert b"aidb_worker_keys_processed_total" in response.read()
    finally:
        server.shutdown()
        server.server_close()


def test_hpa_metric_is_one_the_worker_exports():
    metric = manifests()["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["external"]["metric"]
    stats = WorkerStats()
    stats.record_batch("docs", 5, pending=1234)
    exported = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(
                    generate_latest(metrics_registry(stats)).decode())
                for sample in family.samples}
    labels = tuple(sorted(metric["selector"]["matchLabels"].items()))
    assert exported.get((metric["name"], labels)) == 1234


def test_keda_trigger_is_well_formed():
    container = worker_container()
    (trigger,) = manifests()["ScaledObject"]["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    metadata = trigger["metadata"]
    # KEDA's trigger metadata is a map of strings: a YAML number is refused.
    assert all(isinstance(v, str) for v in metadata.values()), metadata
    assert metadata["connectionFromEnv"] in env_values(container)
    assert float(metadata["targetQueryValue"]) > 0


def test_keda_query_returns_the_backlog(conn, fake_model, monkeypatch):
    """The query, as written, counts the distinct keys waiting in the backlog
    of the pipeline the Deployment serves."""
    container = worker_container()
    pipeline = parsed(container["args"], env_values(container), monkeypatch).pipelines[0]
    query = manifests()["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"]
    create_docs(conn, [(i, f"text {i}") for i in range(1, 38)])
    create_pipeline(conn, pipeline, auto_processing="Disabled")
    assert conn.execute(query).fetchall() == [(37,)]
    # More rows, and a key queued twice: still one per distinct key.
    insert_docs(conn, [(i, f"text {i}") for i in range(38, 51)])
    conn.execute("UPDATE docs SET body = body || '!' WHERE id = 1")
    assert conn.execute(query).fetchall() == [(50,)]
    # Another pipeline's backlog is not counted.
    conn.execute("CREATE TABLE other (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO other SELECT g, 'x' FROM generate_series(1, 5) g")
    create_pipeline(conn, "other", source="other", auto_processing="Disabled")
    assert conn.execute(query).fetchall() == [(50,)]
    # Drained: 0, which lets KEDA scale the workers to zero.
    conn.execute("SELECT aidb.run_pipeline(%s)", (pipeline,))
    assert conn.execute(query).fetchall() == [(0,)]

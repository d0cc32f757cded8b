"""The local model's backends (python/aidb/models/local_embeddings.py): the
export made at install time, on ONNX Runtime and on OpenVINO, must embed
every text as the torch model does (cosine >= 0.99 per text), truncation
included; the settings that choose a backend and a device refuse bad values
and change nothing.

Every vector is made by the installed engine inside PostgreSQL, through
aidb.encode_text_batch, and compared there by pgvector's cosine distance.
"""

import json
import os
import random
import re
import subprocess
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from psycopg.types.json import Jsonb

from tests.support.common import error_text, scratch_database, sql_error

pytestmark = pytest.mark.slow          # loads torch, ONNX Runtime and OpenVINO in one backend

MODELS = {"m_torch": {"backend": "torch", "device": "cpu"},
          "m_onnx": {"backend": "onnx"},
          "m_int8": {"backend": "onnx-int8"},
          "m_openvino": {}}                              # the default backend
# The float runtimes of the export, each held to torch.
EXPORTED = ["m_onnx", "m_openvino"]
REQUIRED_COSINE = 0.99
# int8 is opt-in: its floor here guards against a broken quantization only
# (its measured minimum is in docs/reference.md).
INT8_FLOOR = 0.95

# Per text: 1 - cosine distance between the two models' vectors, in order.
COSINES = """
SELECT 1 - (a.v OPERATOR(public.<=>) b.v)
  FROM unnest(aidb.encode_text_batch(%(x)s, %(texts)s)) WITH ORDINALITY a(v, i)
  JOIN unnest(aidb.encode_text_batch(%(y)s, %(texts)s)) WITH ORDINALITY b(v, i) USING (i)
 ORDER BY i"""


@pytest.fixture(scope="module")
def backend(cluster):
    """One backend with the three models (each loads once per process)."""
    with scratch_database(cluster, "t_onnx_", template="aidb_template") as name:
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            for model, config in MODELS.items():
                conn.execute("SELECT aidb.create_model(%s, 'local_embeddings', %s)",
                             (model, Jsonb(config)))
            yield conn


def cosines(conn, texts, x="m_torch", y="m_onnx"):
    return [row[0] for row in conn.execute(COSINES, {"x": x, "y": y, "texts": texts})]


def words(rng, count, vocabulary):
    return " ".join(rng.choice(vocabulary) for _ in range(count))


ENGLISH = ("the database keeps every embedding of a row up to date while workers drain "
           "backlogs quickly and safely after each commit").split()
UNICODE = ["Größe", "naïve", "東京タワー", "日本語の文章", "Ωμέγα", "שָׁלוֹם", "مرحبا",
           "🙂", "👩‍💻", "e\u0301", "zero\u200bwidth", "ℕ⊆ℝ", "🇫🇷", "ÅNGSTRÖM", "Ⅻ"]


def varied_texts():
    """Empty and blank texts, one word, sentences, texts far past the model's
    256 tokens (truncated), unicode of many scripts, punctuation, numbers."""
    rng = random.Random(20261203)
    texts = ["", " ", "\n\t", "a", "A.", "hello world", "?!", "42", "x" * 2000]
    texts += [words(rng, rng.randint(3, 40), ENGLISH) for _ in range(12)]
    texts += [words(rng, rng.randint(3, 40), UNICODE) for _ in range(10)]
    texts += [words(rng, rng.randint(300, 900), ENGLISH + UNICODE) for _ in range(8)]
    texts += [" ".join(str(rng.randint(0, 10 ** 9)) for _ in range(rng.randint(1, 80)))
              for _ in range(4)]
    texts += ["".join(rng.choice(",.;:!?()[]{}<>-_/\\'\"") for _ in range(rng.randint(1, 60)))
              for _ in range(4)]
    return texts


@pytest.mark.smoke         # on every major: the export and the runtime of each install
@pytest.mark.parametrize("model", EXPORTED)
def test_the_export_embeds_every_text_as_torch_does(backend, model):
    texts = varied_texts()
    found = cosines(backend, texts, y=model)
    assert len(found) == len(texts)
    worst = min(range(len(texts)), key=found.__getitem__)
    assert found[worst] >= REQUIRED_COSINE, (found[worst], texts[worst][:80])


def test_int8_stays_close_to_torch(backend):
    texts = varied_texts()
    found = cosines(backend, texts, y="m_int8")
    assert min(found) >= INT8_FLOOR, min(found)
    # Quantized, not the float graph under another name.
    assert min(found) < 0.9999


@pytest.mark.parametrize("model", EXPORTED)
@pytest.mark.parametrize("tokens", [200, 253, 254, 255, 256, 300])
def test_truncation_matches_torch_at_the_boundary(backend, tokens, model):
    """'word' is one token: with [CLS] and [SEP], 254 words fill the 256
    tokens; from there on, further words change neither model's vector."""
    text = "word " * tokens
    longer = text + "different entirely unrelated words " * 20
    again, again_longer = cosines(backend, [text, longer], x=model, y=model)
    assert again > 0.99999 and again_longer > 0.99999        # deterministic
    assert min(cosines(backend, [text, longer], y=model)) >= REQUIRED_COSINE
    same = backend.execute("SELECT aidb.encode_text(%s, %s) = aidb.encode_text(%s, %s)",
                           (model, text, model, longer)).fetchone()[0]
    assert same is (tokens >= 254)


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
               max_size=400)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=1, max_size=6), model=st.sampled_from(EXPORTED))
def test_the_export_matches_torch_on_any_text(backend, texts, model):
    """Batches of arbitrary unicode, padded together in one run."""
    found = cosines(backend, texts, y=model)
    assert min(found) >= REQUIRED_COSINE, (min(found), texts)


def test_new_models_default_to_openvino_and_existing_ones_keep_torch(backend):
    backend.execute("SELECT aidb.create_model('m_default', 'local_embeddings', '{}')")
    try:
        config = backend.execute("SELECT config FROM aidb.model_registry WHERE name = "
                                 "'m_default'").fetchone()[0]
        assert config["backend"] == "openvino" and config["device"] == "auto"
        assert backend.execute("SELECT config->>'backend' FROM aidb.model_registry "
                               "WHERE name = 'minilm'").fetchone() == ("openvino",)
        # A row stored before backends existed has none: it runs on torch
        # (device auto: the CPU here), which this backend had not loaded yet.
        backend.execute("""INSERT INTO aidb.model_registry (name, provider, config)
                           VALUES ('m_old', 'local_embeddings',
                                   '{"model": "all-MiniLM-L6-v2", "max_batch_size": 64}')""")
        assert ("torch", "auto") not in loaded_models(backend)
        texts = ["an existing model", "keeps working"]
        assert min(cosines(backend, texts, x="m_torch", y="m_old")) > 0.99999
        assert ("torch", "auto") in loaded_models(backend)
    finally:
        backend.execute("DELETE FROM aidb.model_registry WHERE name IN ('m_default', 'm_old')")


BACKEND_MUST_BE = 'option "backend" must be one of "onnx", "onnx-int8", "openvino", "torch", got '
DEVICE_MUST_BE = 'option "device" must be one of "auto", "cpu", "cuda", got '
REJECTED = [
    ({"backend": "tensorflow"}, BACKEND_MUST_BE + '"tensorflow"'),
    ({"backend": "ONNX"}, BACKEND_MUST_BE + '"ONNX"'),
    ({"backend": ["onnx"]}, BACKEND_MUST_BE + '["onnx"]'),
    ({"backend": "OpenVINO"}, BACKEND_MUST_BE + '"OpenVINO"'),
    ({"device": "gpu"}, DEVICE_MUST_BE + '"gpu"'),
    ({"device": 0}, DEVICE_MUST_BE + "0"),
    ({"threads": 0}, 'option "threads" must be an integer from 1 to 1024, got 0'),
    ({"threads": "2"}, 'option "threads" must be an integer from 1 to 1024, got "2"'),
    ({"threads": 5000}, 'option "threads" must be an integer from 1 to 1024, got 5000'),
]


@pytest.mark.parametrize("config, message", REJECTED)
def test_bad_backend_settings_are_refused_and_change_nothing(backend, config, message):
    before = backend.execute("SELECT name, config FROM aidb.model_registry ORDER BY 1").fetchall()
    error = sql_error(backend, "SELECT aidb.create_model('m_bad', 'local_embeddings', %s)",
                      (Jsonb(config),))
    assert error.sqlstate == "22023"
    assert 'model "m_bad": ' + message in error.diag.message_primary, error_text(error)
    after = backend.execute("SELECT name, config FROM aidb.model_registry ORDER BY 1").fetchall()
    assert after == before


def test_cuda_without_a_gpu_says_so(backend):
    """No GPU on this machine kind: a model that insists on CUDA fails with
    a message that says why and what to set instead."""
    backend.execute("SELECT aidb.create_model('m_cuda', 'local_embeddings', "
                    "'{\"backend\": \"torch\", \"device\": \"cuda\"}')")
    backend.execute("SELECT aidb.create_model('m_cuda_onnx', 'local_embeddings', "
                    "'{\"backend\": \"onnx\", \"device\": \"cuda\"}')")
    backend.execute("SELECT aidb.create_model('m_cuda_openvino', 'local_embeddings', "
                    "'{\"backend\": \"openvino\", \"device\": \"cuda\"}')")
    try:
        # OpenVINO runs on the CPU only, GPU or not.
        error = sql_error(backend, "SELECT aidb.encode_text('m_cuda_openvino', 'x')")
        assert 'device "cuda" is set, but backend "openvino" runs on the CPU only' \
            in error_text(error)
        assert '"backend": "torch"' in error_text(error)
        if cuda_available(backend):
            pytest.skip("this machine has a CUDA GPU")
        error = sql_error(backend, "SELECT aidb.encode_text('m_cuda', 'x')")
        assert 'device "cuda" is set, but torch sees no CUDA GPU here' in error_text(error)
        assert '"device": "auto"' in error_text(error)
        error = sql_error(backend, "SELECT aidb.encode_text('m_cuda_onnx', 'x')")
        assert "this ONNX Runtime has no CUDA provider" in error_text(error)
        assert "onnxruntime-gpu" in error_text(error)
    finally:
        backend.execute("DELETE FROM aidb.model_registry WHERE name LIKE 'm_cuda%'")


def test_a_gpu_is_used_where_there_is_one(backend):
    """device "auto" (the default) puts the torch model on the GPU."""
    if not cuda_available(backend):
        pytest.skip("no CUDA GPU on this machine")
    backend.execute("SELECT aidb.create_model('m_gpu', 'local_embeddings', "
                    "'{\"backend\": \"torch\"}')")
    try:
        texts = ["on the GPU", "the same vectors"]
        assert min(cosines(backend, texts, x="m_torch", y="m_gpu")) >= REQUIRED_COSINE
        backend.execute("""CREATE OR REPLACE FUNCTION pg_temp.devices() RETURNS text[]
                           LANGUAGE plpython3u AS $$
from aidb.models import local_embeddings
return sorted(str(m.device) for k, m in local_embeddings._loaded.items() if k[1] == "torch")
$$""")
        devices = backend.execute("SELECT pg_temp.devices()").fetchone()[0]
        assert "cpu" in devices and any(d.startswith("cuda") for d in devices), devices
    finally:
        backend.execute("DELETE FROM aidb.model_registry WHERE name = 'm_gpu'")


def loaded_models(conn):
    """(backend, device) of every model instance the backend has loaded."""
    conn.execute("""CREATE OR REPLACE FUNCTION pg_temp.loaded() RETURNS text[]
                    LANGUAGE plpython3u AS $$
from aidb.models import local_embeddings
return sorted(k[1] + " " + k[2] for k in local_embeddings._loaded)
$$""")
    return {tuple(k.split()) for k in conn.execute("SELECT pg_temp.loaded()").fetchone()[0]}


ENGINE_PYTHON = "/usr/bin/python3"         # the interpreter PL/Python embeds


def engine_python(conn, code, **env):
    """Runs `code` with the installed engine and its dependencies (as
    PostgreSQL loads them), outside PostgreSQL; returns the finished process."""
    engine_dir = conn.execute("SELECT aidb._engine_dir()").fetchone()[0]
    return subprocess.run([ENGINE_PYTHON, "-P", "-c", code], capture_output=True, text=True,
                          cwd="/", timeout=300,
                          env={**os.environ, **env, "PYTHONPATH": f"{engine_dir}/engine:"
                                                                  f"{engine_dir}/deps"})


def test_the_install_time_export_is_stamped_and_not_redone(backend):
    """make install ran the exporter; running it again on the same inputs
    does nothing (a reinstall costs no export)."""
    engine_dir = backend.execute("SELECT aidb._engine_dir()").fetchone()[0]
    export = os.path.join(engine_dir, "onnx", "all-MiniLM-L6-v2")
    assert sorted(os.listdir(export)) == [".stamp", "model-int8.onnx", "model-openvino.bin",
                                          "model-openvino.xml", "model.onnx",
                                          "settings.json", "tokenizer.json"]
    before = os.stat(os.path.join(export, "model.onnx")).st_mtime_ns
    started = time.monotonic()
    done = engine_python(backend, "from aidb.models.onnx_export import main; "
                                  f"main([{os.path.join(engine_dir, 'onnx')!r}])")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ONNX export of all-MiniLM-L6-v2 is up to date" in done.stdout
    assert time.monotonic() - started < 30
    assert os.stat(os.path.join(export, "model.onnx")).st_mtime_ns == before


def test_a_missing_export_says_how_to_make_one(backend, tmp_path):
    """Outside an install (an external worker from pip) without an export,
    the ONNX backend fails with a message that says what to run."""
    done = engine_python(backend, """
from aidb.errors import ModelError
from aidb.models.local_embeddings import LocalEmbeddings
model = LocalEmbeddings("m", LocalEmbeddings.validate("m", {}, None))
try:
    model.embed(["x"])
except ModelError as error:
    print(error, "|", error.hint)
""", AIDB_ONNX_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'local model "all-MiniLM-L6-v2" cannot load: no ONNX export in {tmp_path}' \
        in done.stdout
    assert "python -m aidb.models.onnx_export DIR" in done.stdout and "AIDB_ONNX_DIR" in done.stdout


def test_an_export_without_the_openvino_files_says_how_to_make_them(backend, tmp_path):
    """An export made by an aidb before the OpenVINO backend (copied here
    without its OpenVINO files) still serves ONNX; OpenVINO says what to run."""
    engine_dir = backend.execute("SELECT aidb._engine_dir()").fetchone()[0]
    export = os.path.join(engine_dir, "onnx", "all-MiniLM-L6-v2")
    old = tmp_path / "all-MiniLM-L6-v2"
    old.mkdir()
    for name in os.listdir(export):
        if not name.startswith("model-openvino"):
            os.link(os.path.join(export, name), old / name)
    done = engine_python(backend, """
from aidb.errors import ModelError
from aidb.models.local_embeddings import LocalEmbeddings
print(len(LocalEmbeddings("m", LocalEmbeddings.validate("m", {"backend": "onnx"}, None)
          ).embed(["x"])[0]))
model = LocalEmbeddings("m", LocalEmbeddings.validate("m", {"backend": "openvino"}, None))
try:
    model.embed(["x"])
except ModelError as error:
    print(error, "|", error.hint)
""", AIDB_ONNX_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("384\n"), done.stdout
    assert f'local model "all-MiniLM-L6-v2" cannot load: the export in {old} has no ' \
           "model-openvino.xml" in done.stdout
    assert "python -m aidb.models.onnx_export DIR" in done.stdout


def test_openvino_computes_in_bfloat16_where_the_cpu_has_it(backend):
    """The precision follows the CPU's flags (/proc/cpuinfo, read here
    independently of OpenVINO): the cosine tests above then hold bfloat16
    to torch on such a CPU, float32 elsewhere."""
    backend.execute("SELECT aidb.encode_text('m_openvino', 'load it')")
    backend.execute("""CREATE OR REPLACE FUNCTION pg_temp.precisions() RETURNS text[]
                       LANGUAGE plpython3u AS $$
from aidb.models import local_embeddings
return [m.precision for k, m in local_embeddings._loaded.items() if k[1] == "openvino"]
$$""")
    flags = set(re.search(r"^flags\s*:(.*)$", open("/proc/cpuinfo").read(), re.M).group(1).split())
    expected = "bf16" if flags & {"avx512_bf16", "amx_bf16"} else "f32"
    assert backend.execute("SELECT pg_temp.precisions()").fetchone()[0] == [expected]


def test_concurrent_batches_share_one_openvino_model(backend):
    """An external worker embeds several batches at once in threads that
    share the process's model: each gets its own texts' vectors."""
    done = engine_python(backend, """
import json, threading
from aidb.models.local_embeddings import LocalEmbeddings
model = LocalEmbeddings("m", LocalEmbeddings.validate("m", {"backend": "openvino"}, None))
batches = [[f"batch {b} text {i} " + "word " * (b * 7 + i) for i in range(9)] for b in range(6)]
alone = [model.embed(batch) for batch in batches]
together = [None] * len(batches)
def run(b):
    for _ in range(3):
        together[b] = model.embed(batches[b])
threads = [threading.Thread(target=run, args=(b,)) for b in range(len(batches))]
for t in threads: t.start()
for t in threads: t.join()
worst = min(sum(x * y for x, y in zip(u, v))
            for a, t in zip(alone, together) for u, v in zip(a, t))
print(json.dumps({"worst": worst, "distinct": len({tuple(v) for a in alone for v in a})}))
""")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["distinct"] == 54
    assert result["worst"] > 0.99999, result


# PostgreSQL's signals, as /proc/<pid>/task/<tid>/status numbers them.
POSTGRES_SIGNALS = {"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGUSR1": 10, "SIGUSR2": 12,
                    "SIGALRM": 14, "SIGTERM": 15}


@pytest.mark.parametrize("model", ["m_onnx", "m_openvino", "m_torch"])
def test_runtime_threads_leave_postgres_signals_to_the_main_thread(cluster, dbname, model):
    """The runtimes' thread pools (ONNX Runtime's, OpenVINO's, the tokenizer's, torch's)
    block PostgreSQL's signals, so that a cancel or a latch wake-up reaches
    the backend's main thread; the main thread's own mask is unchanged."""
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute("SELECT aidb.create_model(%s, 'local_embeddings', %s)",
                     (model, Jsonb(MODELS[model])))
        conn.execute("SELECT aidb.encode_text_batch(%s, %s)", (model, ["one", "two", "three"]))
        pid = conn.info.backend_pid
        masks = {}
        for task in os.listdir(f"/proc/{pid}/task"):
            status = open(f"/proc/{pid}/task/{task}/status").read()
            masks[int(task)] = int(re.search(r"^SigBlk:\s*([0-9a-f]+)", status, re.M).group(1), 16)
    assert len(masks) > 1, "the runtime started no thread"
    for tid, mask in masks.items():
        blocked = {name for name, number in POSTGRES_SIGNALS.items() if mask >> (number - 1) & 1}
        if tid == pid:
            assert not blocked & {"SIGINT", "SIGTERM", "SIGUSR1"}, blocked
        else:
            assert blocked == set(POSTGRES_SIGNALS), (tid, blocked)


def cuda_available(conn):
    """Whether torch in the server's engine sees a CUDA GPU."""
    conn.execute("""CREATE OR REPLACE FUNCTION pg_temp.cuda() RETURNS boolean
                    LANGUAGE plpython3u AS $$
import torch
return torch.cuda.is_available()
$$""")
    return conn.execute("SELECT pg_temp.cuda()").fetchone()[0]

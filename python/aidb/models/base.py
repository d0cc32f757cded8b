"""What every provider shares: sending requests concurrently while the
caller watches for a query cancel, retrying transient failures with backoff,
turning HTTP failures into the engine's error categories.

`Model` is the base of every provider. An embedding provider subclasses
`EmbeddingModel` and only says how to send ONE batch (`_embed_batch`) and
which options it takes (`OPTIONS`, checked by `validate`).
"""

import contextlib
import functools
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

from ..errors import ModelError, PIPELINE_PERMANENT, RECORD_PERMANENT, RECORD_TEMPORARY
from ..redact import redact
from .config import check_config, check_credentials, model_invalid
from .retry import RetryPolicy, TransientFailure

# Signals PostgreSQL handles; request threads block them so that the kernel
# delivers them to the backend's main thread, where PostgreSQL expects them.
_POSTGRES_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGURG,
                     signal.SIGCHLD, signal.SIGPIPE}


def block_postgres_signals():
    signal.pthread_sigmask(signal.SIG_BLOCK, _POSTGRES_SIGNALS)


@contextlib.contextmanager
def postgres_signals_blocked():
    """Threads started inside the block (a runtime's thread pool) inherit a
    mask that blocks PostgreSQL's signals, which then reach the backend's
    main thread only; the caller's own mask is restored afterwards."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _POSTGRES_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Model:
    """Base class of the providers."""

    provider = None                 # the provider name used in create_model
    OPTIONS = ()                    # its options (aidb.options.Option), checked by validate
    takes_credentials = True        # False: in-process providers, which refuse keys
    default_max_concurrent_requests = 1

    def __init__(self, name, config, credentials=None):
        self.name = name
        self.config = config
        self.credentials = credentials or {}
        self.max_concurrent = config.get("max_concurrent_requests",
                                         self.default_max_concurrent_requests)
        self.retry_policy = RetryPolicy(max_retries=config.get("max_retries", 5))
        # PL/Python's interruptible sleep (pg_sleep) may only be called by
        # the thread that loaded the model: a pipelined worker embeds in
        # threads of its own, which must never call into PostgreSQL.
        self._interruptible_sleep, self._sleep_thread = None, None
        self._pool = None
        # A Retry-After holds every request of this model until this
        # time.monotonic(), the ones queued behind the refused one and the
        # next batches' alike: a rate-limited provider gets no request early.
        self._hold_until = 0.0
        self._hold_lock = threading.Lock()

    def use_interruptible_sleep(self, sleep):
        """Sleep with `sleep` (e.g. pg_sleep, which a query cancel stops)
        when called from this thread; other threads sleep plainly."""
        self._interruptible_sleep, self._sleep_thread = sleep, threading.get_ident()

    def sleep(self, seconds):
        """Wait `seconds`: interruptibly in the loading thread, plainly elsewhere."""
        if self._interruptible_sleep is not None and threading.get_ident() == self._sleep_thread:
            self._interruptible_sleep(seconds)
        else:
            time.sleep(seconds)

    @classmethod
    def validate(cls, name, config, credentials):
        """`config` checked against OPTIONS and normalised, and the
        credentials checked (refused by a provider that takes none); raises
        InvalidInput on a bad value."""
        checked = check_config(name, cls.provider, config, cls.OPTIONS)
        if not cls.takes_credentials:
            if credentials:
                raise model_invalid(name, f"a {cls.provider} model takes no credentials")
        else:
            check_credentials(name, credentials)
        return checked

    def run_with_retries(self, requests):
        """The results of `requests` (functions of no argument, one provider
        call each), in order. They are sent concurrently (at most
        max_concurrent at once); those that raise TransientFailure are sent
        again after a backoff, up to max_retries times; any other exception
        is raised at once."""
        results = [None] * len(requests)
        pending = list(range(len(requests)))
        for attempt in range(self.retry_policy.max_retries + 1):
            outcomes = self._attempt_in_threads([requests[i] for i in pending])
            failures = []
            for index, outcome in zip(pending, outcomes):
                if isinstance(outcome, TransientFailure):
                    failures.append((index, outcome))
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    results[index] = outcome
            if not failures:
                return results
            pending = [index for index, _ in failures]
            if attempt < self.retry_policy.max_retries:
                retry_after = max((f.retry_after or 0 for _, f in failures), default=0) or None
                self.sleep(self.retry_policy.delay(attempt, retry_after))
        attempts = self.retry_policy.max_retries + 1
        raise self.error(
            f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}: {failures[0][1].message}",
            category=RECORD_TEMPORARY,
            hint="The provider is failing or overloaded; try again later.")

    def _attempt_in_threads(self, requests):
        """Run the requests in the pool (at most max_concurrent at once) while
        this thread keeps checking for a query cancel: self.sleep(0) is
        pg_sleep(0) inside PostgreSQL, which raises if the statement was
        cancelled or the backend terminated, instead of waiting out a hung
        request's timeout."""
        futures = [self._thread_pool().submit(self._attempt, request) for request in requests]
        while True:
            _, not_done = wait(futures, timeout=0.1)
            if not not_done:
                return [future.result() for future in futures]
            self.sleep(0)

    def _attempt(self, request):
        """One try of one request (in a pool thread), once any Retry-After
        has passed; exceptions are returned, not raised, so that the caller
        sees every request's outcome."""
        while (wait := self._hold_until - time.monotonic()) > 0:
            time.sleep(min(wait, 0.1))
        try:
            return request()
        except TransientFailure as exc:
            if exc.retry_after:
                self._hold_requests(self.retry_policy.delay(0, exc.retry_after))
            return exc
        except Exception as exc:   # noqa: BLE001 — reported by run_with_retries
            return exc

    def _hold_requests(self, seconds):
        with self._hold_lock:
            self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    def _thread_pool(self):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.max_concurrent),
                                            thread_name_prefix=f"aidb-{self.name}",
                                            initializer=block_postgres_signals)
        return self._pool

    def http_failure(self, status, message, retry_after=None):
        """Turn an HTTP error status into what the engine does about it:
        retry (429, 408, 5xx), skip the record (other 4xx), or block the
        pipeline (401/403 rejected credentials, 404 unknown model or URL)."""
        if status in (408, 409, 429) or status >= 500:
            return TransientFailure(f"HTTP {status}: {redact(message)}", retry_after)
        if status in (401, 403):
            return self.error(f"the provider rejected the credentials (HTTP {status}): {message}",
                              category=PIPELINE_PERMANENT,
                              hint="Fix them with create_model(..., replace_credentials => true).")
        if status == 404:
            return self.error(f"the provider does not know this model or URL (HTTP 404): {message}",
                              category=PIPELINE_PERMANENT,
                              hint="Check the model's \"model\" and \"url\" options.")
        return self.error(f"the provider rejected the input (HTTP {status}): {message}",
                          category=RECORD_PERMANENT)

    def unsendable_request(self):
        """The HTTP client refused to send a request: a header holds a
        character HTTP does not allow. Only the key can put one there
        (config.resolve_api_key checks it first); retrying cannot help, and
        the client's own message would echo the header."""
        return self.error("the HTTP client refused to send the request: a header holds a "
                          "character that HTTP does not allow", category=PIPELINE_PERMANENT,
                          hint="Check the model's credentials; replace them with "
                               "create_model(..., replace_credentials => true).")

    def unusable_answer(self, expected, response):
        """A 2xx answer without the `expected` part (a proxy's page, a cut
        body): retried as a 5xx is, since the server, not the input, is
        wrong; the message gives its size, never its text."""
        return TransientFailure(f"the answer (HTTP {response.status_code}, "
                                f"{len(response.content)} bytes) holds no {expected}")

    def error(self, cause, **kwargs):
        """A ModelError that names this model and never shows a secret."""
        return ModelError(f'model "{self.name}": {redact(cause)}', **kwargs)

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class EmbeddingModel(Model):
    """Base class of the embedding providers."""

    default_max_batch_size = 64

    def __init__(self, name, config, credentials=None):
        super().__init__(name, config, credentials)
        self.max_batch_size = config.get("max_batch_size", self.default_max_batch_size)

    @property
    def dimensions(self):
        """Length of the vectors this model returns, if known without a call."""
        return self.config.get("dimensions")

    def _embed_batch(self, texts):
        """Embed one batch; raise TransientFailure to have it retried."""
        raise NotImplementedError

    def embed(self, texts):
        """Vectors for `texts`, in order: batched, concurrent, retried."""
        texts = list(texts)
        if not texts:
            return []
        batches = [texts[i:i + self.max_batch_size]
                   for i in range(0, len(texts), self.max_batch_size)]
        results = self.run_with_retries([functools.partial(self._embed_batch, batch)
                                         for batch in batches])
        for batch, vectors in zip(batches, results):
            self._check_shape(batch, vectors)
        return [vector for vectors in results for vector in vectors]

    def _check_shape(self, texts, vectors):
        if len(vectors) != len(texts):
            raise self.error(f"returned {len(vectors)} vectors for {len(texts)} inputs")
        expected = self.dimensions
        if expected and any(len(v) != expected for v in vectors):
            raise self.error(f"returned vectors of {len(vectors[0])} dimensions, "
                             f"but its configuration says {expected}",
                             hint="Fix the model's \"dimensions\" option.")

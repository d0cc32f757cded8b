"""Deterministic fake model outputs shared by the fake model server and the tests.

The server (tests/support/model_server.py) answers every embedding request with
fake_embedding(text, dims, model), so a test can recompute the exact vector it
expects for any input without talking to the server. Standard library only.

Vector recipe (keep it stable: stored expectations and benchmarks depend on it):
  seed   = sha256(utf8(model + "\\0" + text))
  stream = sha256(seed + be32(0)) || sha256(seed + be32(1)) || ...   (32 bytes each)
  x_i    = le_int32(stream[4i : 4i+4]) / 2**31                        (in [-1, 1))
  result = x / ||x||_2                                               (unit length)
(The 2**31 scale cancels in the normalisation, so the code skips it.)
"""
from __future__ import annotations

import hashlib
import math
import struct

_BLOCK_BYTES = 32                       # one sha256 digest


def _utf8(text: str) -> bytes:
    """UTF-8 bytes that also tolerate lone surrogates (valid in JSON strings)."""
    return text.encode("utf-8", "surrogatepass")


def _byte_stream(seed: bytes, nbytes: int) -> bytes:
    """At least nbytes pseudo-random bytes: sha256(seed + counter) blocks, concatenated."""
    blocks = -(-nbytes // _BLOCK_BYTES)
    sha = hashlib.sha256
    return b"".join([sha(seed + i.to_bytes(4, "big")).digest() for i in range(blocks)])


def fake_embedding(text: str, dims: int, model: str = "") -> list[float]:
    """A deterministic unit-length vector of `dims` floats for (model, text)."""
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims}")
    seed = hashlib.sha256(_utf8(model) + b"\0" + _utf8(text)).digest()
    ints = struct.unpack_from(f"<{dims}i", _byte_stream(seed, dims * 4))
    norm = math.hypot(*ints)
    if norm == 0.0:  # every chunk was zero: astronomically unlikely
        return [1.0] + [0.0] * (dims - 1)
    scale = 1.0 / norm
    return [x * scale for x in ints]


def token_count(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def fake_completion(prompt: str) -> str:
    """A deterministic 'summary' of prompt: its first 12 words after a fixed prefix."""
    return "summary: " + " ".join(prompt.split()[:12])

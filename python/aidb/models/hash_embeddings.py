"""Provider `hash_embeddings`: a deterministic embedding computed from the
text alone, with no model, no network and no key: each word (lower-cased
run of letters and digits) is hashed into one of `dimensions` slots with a
sign, and the counts are scaled to unit length (feature hashing).

Texts that share words are close; texts that mean the same in other words
are not: it is lexical, not semantic. It exists for demos, tests and
trying aidb where no model can be installed or reached, and costs
microseconds per text. The same text gives the same vector in every
process and release (blake2b of the word; the hash is part of its
definition and must not change).
"""

import hashlib
import math
import re

from ..options import Option
from .base import EmbeddingModel

_WORD = re.compile(r"\w+")


class HashEmbeddings(EmbeddingModel):
    provider = "hash_embeddings"
    default_max_batch_size = 1024
    takes_credentials = False
    OPTIONS = (
        Option("dimensions", "integer", "Length of the vectors.", default=256,
               minimum=1, maximum=16000),
    )


    @property
    def dimensions(self):
        return self.config.get("dimensions", 256)

    def embed(self, texts):
        """In-process and instant: nothing to batch or retry."""
        return [hash_vector(text, self.dimensions) for text in texts]


def hash_vector(text, dimensions):
    """The unit-length feature-hashing vector of `text`'s words."""
    vector = [0.0] * dimensions
    # A text without words hashes "" instead: one fixed unit vector, since
    # a zero vector has no cosine distance to anything.
    for word in _WORD.findall(text.lower()) or [""]:
        digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vector[digest % dimensions] += 1.0 if digest >> 63 else -1.0
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else [1.0] + [0.0] * (dimensions - 1)

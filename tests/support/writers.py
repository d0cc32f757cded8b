"""Source rows for pipeline tests: numbered documents, random prose, and a
seeded writer of random changes on `docs`."""
from __future__ import annotations

import random

from .pipeline_checks import insert_docs, pending
from .polling import wait_for

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
         "mike november oscar papa quebec romeo sierra tango uniform victor").split()


def random_body(rng):
    """A few sentences of random words (long enough for several chunks)."""
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) + "."
                 for _ in range(rng.randint(1, 4))]
    return " ".join(sentences).capitalize()


def numbered_docs(ids, prefix="document"):
    return [(i, f"{prefix} {i} about {WORDS[i % len(WORDS)]}") for i in ids]


class RandomWriter:
    """Inserts, updates, deletes and key changes on docs, chosen by a seeded
    generator (TRUNCATE on request); keeps the set of ids that exist. New
    keys are ever higher ids or, with `key_space`, free keys of that set (a
    small one keeps writers and workers on the same keys)."""

    def __init__(self, conn, seed, ids, key_space=None):
        self.conn, self.rng, self.ids, self.next_id = conn, random.Random(seed), set(ids), max(ids) + 1
        self.key_space = None if key_space is None else sorted(key_space)

    def step(self):
        operation = self.rng.choices(["insert", "update", "delete", "rekey", "bulk"],
                                     weights=[35, 30, 10, 15, 5])[0]
        if operation == "insert" or not self.ids:
            self._insert()
        else:
            getattr(self, "_" + operation)(self.rng.choice(sorted(self.ids)))

    def _new_key(self):
        """A key that no row has (None: the key space is full)."""
        if self.key_space is None:
            self.next_id += 1
            return self.next_id - 1
        free = [key for key in self.key_space if key not in self.ids]
        return self.rng.choice(free) if free else None

    def _insert(self):
        key = self._new_key()
        if key is None:
            return self._update(self.rng.choice(sorted(self.ids)))
        insert_docs(self.conn, [(key, random_body(self.rng))])
        self.ids.add(key)

    def _update(self, key):
        self.conn.execute("UPDATE docs SET body = %s WHERE id = %s", (random_body(self.rng), key))

    def _delete(self, key):
        self.conn.execute("DELETE FROM docs WHERE id = %s", (key,))
        self.ids.discard(key)

    def _rekey(self, key):
        new_key = self._new_key()
        if new_key is None:
            return self._update(key)
        self.conn.execute("UPDATE docs SET id = %s WHERE id = %s", (new_key, key))
        self.ids.discard(key)
        self.ids.add(new_key)

    def _bulk(self, key):
        # One statement touching many rows: the statement-level trigger's case.
        self.conn.execute("UPDATE docs SET body = body || ' Again.' WHERE id %% 5 = %s", (key % 5,))

    def truncate(self):
        self.conn.execute("TRUNCATE docs")
        self.ids.clear()



WRITES = 400
WRITES_PER_ROUND = 40


def write_while_workers_keep_up(writer, pipelines=("p",)):
    """WRITES random changes on docs by `writer` (a RandomWriter on its own
    connection), in rounds: after each, wait until the workers have caught
    up on every pipeline, so that processing and writing overlap throughout."""
    for done in range(1, WRITES + 1):
        writer.step()
        if done % WRITES_PER_ROUND == 0:
            wait_for(lambda: all(pending(writer.conn, name) <= 5 for name in pipelines),
                     message="the workers to catch up")

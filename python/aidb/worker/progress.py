"""Progress on a terminal: one line per pipeline, redrawn after each batch."""

import sys
import threading

_lock = threading.Lock()


def attach_progress(stats, stream=sys.stderr):
    """Redraw the per-pipeline lines whenever `stats` changes."""
    drawn = {"lines": 0}

    def redraw(_pipeline, current):
        with _lock:
            if drawn["lines"]:
                stream.write(f"\x1b[{drawn['lines']}F")     # back to the first line
            for name, counts in sorted(current.per_pipeline.items()):
                bar = "#" * min(30, counts["batches"] % 31)
                stream.write(f"\x1b[2K{name:<24} {bar:<30} {counts['keys']:>9} keys "
                             f"{counts['errors']:>4} errors\n")
            drawn["lines"] = len(current.per_pipeline)
            stream.flush()

    stats.listeners.append(redraw)

"""Progress on a terminal: a bar per pipeline — the keys this worker has
processed out of those plus the keys still pending — redrawn after each
batch, with log lines printed above the bars instead of through them."""

import logging
import shutil
import sys
import threading
import time

NAME_WIDTH = 20
BAR_WIDTH = (10, 40)     # narrowest and widest bar


class ProgressDisplay:
    """The block of bars at the bottom of the terminal."""

    def __init__(self, stats, stream):
        self.stats, self.stream = stats, stream
        self._lock = threading.Lock()
        self._lines = 0            # lines of the block drawn last
        self._marks = ("█", "░") if _can_encode(stream, "█░") else ("#", "-")

    def update(self, _pipeline=None, _stats=None):
        """Redraw (a WorkerStats listener)."""
        with self._lock:
            self._erase()
            self._draw()

    def write_above(self, text):
        """Print a line above the bars."""
        with self._lock:
            self._erase()
            self.stream.write(text + "\n")
            self._draw()

    def _erase(self):
        if self._lines:
            # To the start of the block's first line, then clear to the end of the screen.
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")
            self._lines = 0

    def _draw(self):
        width = shutil.get_terminal_size((100, 24)).columns
        elapsed = max(time.monotonic() - self.stats.started, 1e-3)
        rows = self.stats.snapshot()
        for name, counts in rows.items():
            self.stream.write(render_line(name, counts, elapsed, width, self._marks) + "\n")
        self._lines = len(rows)
        self.stream.flush()


def render_line(name, counts, elapsed, width=100, marks=("#", "-")):
    """One pipeline's line, at most width - 1 characters (a full line would
    wrap on some terminals and break the redraw)."""
    done, pending = counts["keys"], counts["pending"]
    label = name if len(name) <= NAME_WIDTH else name[:NAME_WIDTH - 2] + ".."
    if pending is None:
        fraction, amount = None, f"{done} keys"
    else:
        total = done + pending
        fraction = done / total if total else 1.0
        amount = f"{done}/{total} keys"
    percent = "  ?%" if fraction is None else f"{fraction:4.0%}"
    suffix = f" {percent} {amount}  {done / elapsed:.0f} keys/s"
    if counts["errors"]:
        suffix += f"  {counts['errors']} errors"
    room = width - 1 - NAME_WIDTH - 3 - len(suffix)
    bar_width = max(BAR_WIDTH[0], min(BAR_WIDTH[1], room))
    filled = round(bar_width * (fraction or 0))
    bar = marks[0] * filled + marks[1] * (bar_width - filled)
    return f"{label:<{NAME_WIDTH}} [{bar}]{suffix}"[:width - 1]


class _LogAboveBars(logging.Handler):
    """Log records as lines above the bars; per-batch records (flagged
    `batch`) are left out: the bars show them."""

    def __init__(self, display, formatter):
        super().__init__()
        self.display = display
        self.setFormatter(formatter)

    def emit(self, record):
        if getattr(record, "batch", False):
            return
        try:
            self.display.write_above(self.format(record))
        except Exception:  # noqa: BLE001 — logging's own error reporting
            self.handleError(record)


def attach_progress(stats, stream=None):
    """Show `stats` as bars on `stream` (stderr), redrawn whenever it changes;
    the root logger's handlers writing to that stream print above the bars."""
    stream = stream or sys.stderr
    display = ProgressDisplay(stats, stream)
    stats.wants_pending = True
    stats.listeners.append(display.update)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "stream", None) is stream:
            root.removeHandler(handler)
            root.addHandler(_LogAboveBars(display, handler.formatter))
    return display


def _can_encode(stream, text):
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True

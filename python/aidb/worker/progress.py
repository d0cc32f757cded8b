"""Progress on a terminal, drawn by rich: a bar per pipeline — the keys this
worker has processed out of those plus the keys still pending — redrawn
after each batch, with log lines printed above the bars instead of through
them."""

import logging
import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Column
from rich.text import Text

NAME_WIDTH = 20
BAR_WIDTH = 40


class ProgressDisplay:
    """The block of bars at the bottom of the terminal."""

    def __init__(self, stats, stream):
        self.stats = stats
        self.console = Console(file=stream)
        self.progress = Progress(
            TextColumn("{task.description}", markup=False,
                       table_column=Column(width=NAME_WIDTH, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=BAR_WIDTH),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn("keys  {task.fields[rate]:.0f} keys/s{task.fields[errors]}", markup=False),
            console=self.console,
            # Redrawn when the counters change, not on a timer.
            auto_refresh=False,
        )
        self._tasks = {}
        self._lock = threading.Lock()

    def start(self):
        self.progress.start()

    def stop(self):
        """The final counts, left on the terminal."""
        self.update()
        self.progress.stop()

    def update(self, _pipeline=None, _stats=None):
        """Redraw (a WorkerStats listener)."""
        with self._lock:
            elapsed = max(time.monotonic() - self.stats.started, 1e-3)
            for name, counts in self.stats.snapshot().items():
                done, pending = counts["keys"], counts["pending"]
                fields = {"rate": done / elapsed,
                          "errors": f"  {counts['errors']} errors" if counts["errors"] else ""}
                if name not in self._tasks:
                    self._tasks[name] = self.progress.add_task(name, total=None, **fields)
                # total None (pending not counted yet): an indeterminate bar.
                self.progress.update(self._tasks[name], completed=done,
                                     total=None if pending is None else done + pending, **fields)
            self.progress.refresh()

    def write_above(self, text):
        """Print a line above the bars."""
        self.console.print(Text(text), soft_wrap=True)


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
    the root logger's handlers writing to that stream print above the bars.
    Returns the display, started: stop() it when done."""
    stream = stream or sys.stderr
    display = ProgressDisplay(stats, stream)
    stats.wants_pending = True
    stats.listeners.append(display.update)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "stream", None) is stream:
            root.removeHandler(handler)
            root.addHandler(_LogAboveBars(display, handler.formatter))
    display.start()
    return display

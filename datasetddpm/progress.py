"""One progress display for every long loop (shown on rank 0 only).

On a terminal: rich bars. Anywhere else (nohup, a redirected log, a batch job) a bar would only be
drawn at the end, so plain lines are printed instead, at most every `interval` seconds and when a
task completes: `sample: 1500/5556 (27%) 4.81 samples/s elapsed 5m12s, 14m03s left`. Durations are
written with their units (`1h05m`, `21m11s`, `45s`): `21:11` reads as a time of day.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text


class _Silent:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def duration(seconds: float) -> str:
    """A span with its units, never a clock time: `45s`, `21m11s`, `1h05m` (seconds dropped past an hour)."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class TimeLeftColumn(ProgressColumn):
    """rich's remaining-time column in the same words as the plain lines (`14m03s left`)."""

    def render(self, task) -> Text:
        left = task.time_remaining
        return Text("" if left is None or task.finished else f"{duration(left)} left", style="progress.remaining")


class PlainProgress:
    """The subset of rich.progress.Progress the toolkit uses, printing lines instead of drawing bars."""

    def __init__(self, stream=None, interval: float = 30.0):
        self.stream, self.interval = stream or sys.stderr, interval
        self.tasks: list[dict] = []

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        now = time.monotonic()
        self.tasks.append({"description": description, "total": total, "completed": completed, "start": now,
                           "start_completed": completed, "printed": now, "fields": fields, "done": False})
        return len(self.tasks) - 1

    def update(self, task: int, *, advance: float = 0, completed: float | None = None, total: float | None = None,
               description: str | None = None, **fields) -> None:
        t = self.tasks[task]
        if completed is not None and completed < t["completed"]:  # a reset (next epoch): restart the clock
            t["start"], t["start_completed"], t["done"] = time.monotonic(), completed, False
        t["completed"] = completed if completed is not None else t["completed"] + advance
        if total is not None:
            t["total"] = total
        if description is not None:
            t["description"] = description
        t["fields"].update(fields)
        finished = t["total"] is not None and t["completed"] >= t["total"]
        now = time.monotonic()
        if (finished and not t["done"]) or now - t["printed"] >= self.interval:
            t["printed"], t["done"] = now, finished
            self.stream.write(self.line(t, now) + "\n")
            self.stream.flush()

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    @staticmethod
    def line(t: dict, now: float) -> str:
        elapsed = now - t["start"]
        done, total = t["completed"], t["total"]
        parts = [f"{t['description']}: {done:g}" + (f"/{total:g} ({100 * done / total:.0f}%)" if total else "")]
        if t["fields"].get("info"):
            parts.append(str(t["fields"]["info"]))
        parts.append(f"elapsed {duration(elapsed)}")
        rate = (done - t["start_completed"]) / elapsed if elapsed > 0 else 0
        if total and rate > 0 and done < total:
            parts[-1] += ","
            parts.append(f"{duration((total - done) / rate)} left")
        return " ".join(parts)


@contextmanager
def progress_bar(enabled: bool = True):
    """Yields a rich Progress on a terminal, a PlainProgress elsewhere, or a silent stand-in when disabled."""
    if not enabled:
        yield _Silent()
        return
    if not Console().is_terminal:
        yield PlainProgress()
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeLeftColumn()]
    with Progress(*columns, transient=False) as progress:
        yield progress

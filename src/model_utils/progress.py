"""Progress that reads well where it lands: a tqdm bar on a terminal, plain lines in a log file.

A bar redraws itself with carriage returns: in a file or a pipe (train.log, the demo's log, the
310 pipeline's logs) that becomes one long line of thousands of updates. There the same progress
is written as a whole line each time another tenth of the work is done, or after `interval`
seconds without a line (for long steps, or when the total is not known), and once at the end:

    tr: checking: 300/1000 mix (30%), 12 s, 25.0 mix/s
"""
import sys
import time

from tqdm import tqdm

INTERVAL = 60.0   # seconds without a progress line after which one is written anyway


def is_terminal(stream):
    """Whether `stream` is an interactive terminal (where a redrawn bar is readable)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:   # a closed stream
        return False


def progress_bar(iterable=None, total=None, desc="", unit="it", leave=False, initial=0,
                 file=None, interval=INTERVAL):
    """A tqdm bar when `file` (default stderr) is a terminal, else a LineProgress.

    Both have update(n), set_postfix(refresh=..., **values), write(message), close(), iteration
    over `iterable`, and the context-manager protocol.
    """
    stream = file if file is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial,
                    file=stream, dynamic_ncols=True)
    return LineProgress(iterable, total, desc, unit, initial, stream, interval)


class LineProgress:
    """Progress as whole lines on `stream`: at every further tenth of `total`, after `interval`
    seconds without a line, and at close when the last count was not written yet."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0, stream=None,
                 interval=INTERVAL):
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = self.initial = initial
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.postfix = ""
        self.start = self.last_time = time.monotonic()
        self.last_tenth = self._tenth()
        self.written_n = initial
        self.closed = False

    def _tenth(self):
        return int(10 * self.n / self.total) if self.total else 0

    def line(self):
        """The progress line for the current count."""
        elapsed = time.monotonic() - self.start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        return (f"{head}{done} {self.unit}{percent}, {elapsed:.0f} s, {rate:.1f} {self.unit}/s"
                f"{self.postfix}")

    def _emit(self):
        print(self.line(), file=self.stream, flush=True)
        self.last_time = time.monotonic()
        self.last_tenth = self._tenth()
        self.written_n = self.n

    def update(self, n=1):
        self.n += n
        if self._tenth() > self.last_tenth or time.monotonic() - self.last_time >= self.interval:
            self._emit()

    def set_postfix(self, refresh=True, **values):
        self.postfix = "".join(f", {k}={v}" for k, v in values.items())

    def write(self, message):
        print(message, file=self.stream, flush=True)

    def close(self):
        if not self.closed and self.n != self.written_n:
            self._emit()
        self.closed = True

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        # not in a `finally`: a loop left by an error writes no line after the error's message
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

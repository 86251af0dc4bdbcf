"""What every fuzz target shares: the pass rule, the time bound, a byte reader.

Pass rule: for every input the code under test returns or raises one of the target's
allowed errors (an :class:`~edgeops.errors.EdgeopsError` subclass), within the target's time
bound. Anything else escapes ``TestOneInput``: atheris records it as a crash with the input,
hypothesis shrinks it to a minimal example.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from edgeops.errors import EdgeopsError


class SlowInput(BaseException):
    """An input took longer than the target's bound (a hang, or work out of all proportion).

    A ``BaseException``, so that code under test which translates ``Exception`` into an
    edgeops error cannot swallow it.
    """


@dataclass(frozen=True, kw_only=True)
class Target:
    """A fuzz target: ``build()`` returns the body, ``seeds()`` the starting corpus."""

    name: str
    doc: str
    build: Callable[[], Callable[[bytes], None]]
    seeds: Callable[[], list[bytes]]
    allowed: tuple[type[EdgeopsError], ...] = (EdgeopsError,)
    #: generous: CI runs on two shared cores; a real hang exceeds any bound
    time_limit_s: float = 5.0
    #: libFuzzer's -max_len for this target (the seeds' size with room to grow)
    max_len: int = 65536
    extra_args: tuple[str, ...] = field(default=())


def build_one_input(target: Target, *, alarm: bool) -> Callable[[bytes], None]:
    """The ``TestOneInput`` of ``target``.

    With ``alarm`` a SIGALRM interrupts an input that runs past the bound (in-process runs
    under pytest); without it libFuzzer's own ``-timeout`` watches for hangs (it owns SIGALRM)
    and the elapsed time is checked once the input returns.
    """
    body = target.build()
    limit = target.time_limit_s

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise SlowInput(f"{target.name}: an input ran longer than {limit} s")

    def TestOneInput(data: bytes) -> None:
        previous = signal.signal(signal.SIGALRM, on_alarm) if alarm else None
        # pytest-timeout may have its own alarm pending: hand back what is left of it.
        outer = signal.setitimer(signal.ITIMER_REAL, limit)[0] if alarm else 0.0
        started = time.perf_counter()
        try:
            body(data)
        except target.allowed:
            pass
        finally:
            elapsed = time.perf_counter() - started
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                if outer:
                    signal.setitimer(signal.ITIMER_REAL, max(outer - elapsed, 0.001))
        if elapsed > limit:
            raise SlowInput(f"{target.name}: an input took {elapsed:.2f} s (bound {limit} s)")

    return TestOneInput


class Reader:
    """Draws values from fuzz bytes; past the end it gives zeros, so every input is usable.

    A small stand-in for atheris' ``FuzzedDataProvider`` that hypothesis runs can use too.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return max(0, len(self._data) - self._pos)

    def take(self, count: int) -> bytes:
        chunk = self._data[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def uint(self, width: int = 1) -> int:
        return int.from_bytes(self.take(width).ljust(width, b"\0"), "little")

    def pick(self, count: int) -> int:
        """An index below ``count``."""
        return self.uint(1) % count

    def flag(self) -> bool:
        return self.uint(1) & 1 == 1

    def rest(self) -> bytes:
        return self.take(self.remaining)

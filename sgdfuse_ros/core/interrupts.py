"""SIGTERM handled as Ctrl-C: one way for every command to be stopped.

A command stopped by ``kill``, a CI timeout or a process manager gets SIGTERM; Python's default
for it ends the process at once, with no message and no clean-up (a half-written output left
to block the re-run). :func:`sigterm_as_interrupt` makes SIGTERM raise ``KeyboardInterrupt``
in the main thread, as SIGINT does, so the code that cleans up after Ctrl-C runs for both.
:func:`keep_sigterm` puts the handler back after a library that installs its own (Ray's
``ray.init`` exits with a stack dump on SIGTERM).
"""

from __future__ import annotations

from contextlib import contextmanager
import signal
import threading


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (in the main thread only:
    elsewhere the block runs unchanged). The previous handler comes back after it."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def keep_sigterm():
    """Whatever the block installs for SIGTERM is undone when it ends (a no-op outside the
    main thread). Under :func:`sigterm_as_interrupt`, a block whose own handler turned SIGTERM
    into ``sys.exit(15)`` (Ray's does) raises ``KeyboardInterrupt`` instead."""
    if not _main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as exc:  # SIGTERM met the block's own handler (``sys.exit(15)``)
        if exc.code == signal.SIGTERM and previous is _interrupt:
            raise KeyboardInterrupt('SIGTERM') from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


__all__ = ['keep_sigterm', 'sigterm_as_interrupt']

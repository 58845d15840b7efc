"""What the ``sgdfuse`` subcommands share: the error line and the progress bar."""

from __future__ import annotations

import sys


def err(msg: str) -> None:
    """One error line on stderr, prefixed as argparse prefixes its own."""
    print(f'sgdfuse: error: {msg}', file=sys.stderr)


def warn(msg: str) -> None:
    print(f'sgdfuse: warning: {msg}', file=sys.stderr)


def progress(items, desc: str, enabled: bool = True, unit: str = 'pair'):
    """``items`` behind a tqdm progress bar on stderr (or as they are when not ``enabled``)."""
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return items
    return tqdm(items, desc=desc, unit=unit, file=sys.stderr)

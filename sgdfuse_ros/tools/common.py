"""What the ``sgdfuse`` subcommands share: the error line, the progress bar and the options
of the pixel budget."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from sgdfuse_ros.core.budget import (DEFAULT_MAX_PIXELS, OVERSIZE_MODES, FrameTooLarge,
                                     parse_max_pixels)


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


def given_options(args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    """The options among ``keys`` given on the command line (unset ones keep the library's
    defaults); paths as strings."""
    opts = {}
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = str(value) if isinstance(value, Path) else value
    return opts


def add_task_argument(p: argparse.ArgumentParser) -> None:
    """``--task``: infrared-visible (``ivif``) or medical fusion
    (:mod:`sgdfuse_ros.fusion.medical`)."""
    p.add_argument('--task', choices=('ivif', 'medical'), default='ivif',
                   help='ivif: a thermal and a camera frame (the default); medical: a PET, '
                   'SPECT or CT image (--ir) with an MRI (--vis), the colour map of the first '
                   'kept, with the medical weights when installed')


def add_budget_arguments(p: argparse.ArgumentParser) -> None:
    """``--max-pixels`` and ``--oversize``: the pixel budget of the networks
    (:mod:`sgdfuse_ros.core.budget`)."""
    p.add_argument('--max-pixels', type=_max_pixels, default=DEFAULT_MAX_PIXELS,
                   metavar='N|WxH',
                   help='most pixels the networks run on, a count or WxH (default 1920x1080 '
                   '= %(default)s; 0: no limit). Memory grows with it: for the default method '
                   'about 0.9 GB at the default, 4.8 GB at 3840x2160 (docs/benchmarks.md)')
    p.add_argument('--oversize', choices=OVERSIZE_MODES, default='resize',
                   help='a frame over --max-pixels: resize (run at the largest size within '
                   "the budget, write at the frame's size; the default) or refuse (an error)")


def _max_pixels(text: str) -> int | None:
    try:
        return parse_max_pixels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def too_large(exc: FrameTooLarge) -> str:
    """The refusal of an over-budget frame in the command line's words."""
    return exc.describe('--max-pixels', '--oversize resize')

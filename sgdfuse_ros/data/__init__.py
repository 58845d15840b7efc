"""Data shipped with the package: a few registered sample pairs (see samples/README.md)."""

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / 'samples'


def samples_dir() -> Path:
    """Folder with ``ir/`` and ``vi/`` sample pairs."""
    return SAMPLES

"""Where the package keeps its files: the shipped weights and the bundled sample pairs."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The shipped weights, each with a JSON sidecar.
WEIGHTS_DIR = PACKAGE_DIR / 'weights'
#: A few registered sample pairs (``ir/`` and ``vi/``; sources in ``samples/README.md``).
SAMPLES = PACKAGE_DIR / 'data' / 'samples'
#: A few registered medical pairs (``MRI_SPECT/{SPECT,MRI}``, ``MRI_CT/{CT,MRI}``; sources in
#: ``medical/README.md``).
MEDICAL_SAMPLES = PACKAGE_DIR / 'data' / 'medical'


def samples_dir() -> Path:
    """Folder with ``ir/`` and ``vi/`` sample pairs."""
    return SAMPLES

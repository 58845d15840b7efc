"""Shared fixtures: real registered IR/visible pairs, from the full collection when it is there.

Where the pairs come from, in order: ``SGDFUSE_DATA`` when set; else the full collection beside
the checkout (``../shared/data/ivif``, as in CI); else the few pairs shipped in ``test/data/ivif``
(see its README), so that the suite runs on a fresh clone. Every test runs on either.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The full collection, when it sits beside the checkout.
FULL_DATA = REPO.parent / 'shared' / 'data' / 'ivif'
#: The pairs shipped with the tests.
SHIPPED_DATA = REPO / 'test' / 'data' / 'ivif'


def ivif_root() -> Path:
    """The registered pair collection (``<set>/ir/NAME``, ``<set>/vi/NAME``) the tests use."""
    if os.environ.get('SGDFUSE_DATA'):
        return Path(os.environ['SGDFUSE_DATA'])
    return FULL_DATA if FULL_DATA.is_dir() else SHIPPED_DATA


@pytest.fixture(scope='session')
def ivif() -> Path:
    root = ivif_root()
    if not root.is_dir():
        pytest.fail(f'test data not found at {root} (SGDFUSE_DATA is set to a missing folder)')
    return root


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long-running (training, soak); CI runs a short '
                            'version unless SGDFUSE_SLOW=1')
    config.addinivalue_line('markers', 'gpu: needs a CUDA device; skipped without one')
    config.addinivalue_line('markers', 'ros: needs rclpy (the ros extra)')


@pytest.fixture(scope='session', autouse=True)
def _engines_dir(tmp_path_factory):
    """ONNX files the tests export (networks run on ONNX Runtime by default) go to a temporary
    folder, not the checkout's ``engines/``; node processes the tests start inherit it."""
    if os.environ.get('SGDFUSE_ENGINES'):
        yield
        return
    os.environ['SGDFUSE_ENGINES'] = str(tmp_path_factory.mktemp('engines'))
    try:
        yield
    finally:
        os.environ.pop('SGDFUSE_ENGINES', None)

"""Shared fixtures: the real IR/visible pairs beside the checkout (``../shared/data/ivif``)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ivif_root() -> Path:
    """The registered pair collection; ``SGDFUSE_DATA`` overrides the default location."""
    return Path(os.environ.get('SGDFUSE_DATA', REPO.parent / 'shared' / 'data' / 'ivif'))


@pytest.fixture(scope='session')
def ivif() -> Path:
    root = ivif_root()
    if not root.is_dir():
        pytest.fail(f'test data not found at {root}; set SGDFUSE_DATA')
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

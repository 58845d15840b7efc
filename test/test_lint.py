"""Code style as a test (ament_flake8 settings, run through ruff: 99 columns, single quotes)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which('ruff') or str(Path(sys.executable).parent / 'ruff')
    if not Path(ruff).exists():
        pytest.skip('ruff is not installed (pip install .[test])')
    proc = subprocess.run([ruff, 'check', '--no-cache', 'sgdfuse_ros', 'test', 'launch',
                           'setup.py'], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

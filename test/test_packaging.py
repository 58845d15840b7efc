"""What an installed package holds: setup.py must ship the weights, the sample pairs and the
ROS share files (a pip or colcon install has no checkout to fall back on)."""

import fnmatch
from pathlib import Path
import runpy

import setuptools

REPO = Path(__file__).resolve().parents[1]


def _setup_kwargs(monkeypatch) -> dict:
    captured = {}
    monkeypatch.setattr(setuptools, 'setup', lambda **kw: captured.update(kw))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / 'setup.py'), run_name='__main__')
    return captured


def test_package_data_covers_weights_and_samples(monkeypatch):
    kw = _setup_kwargs(monkeypatch)
    patterns = kw['package_data']['sgdfuse_ros']
    pkg = REPO / 'sgdfuse_ros'
    wanted = [p for sub in ('weights', 'data/samples') for p in (pkg / sub).rglob('*')
              if p.is_file()]
    assert any(p.suffix == '.pt' for p in wanted) and any(p.suffix == '.jpg' for p in wanted)
    missing = [str(p.relative_to(pkg)) for p in wanted
               if not any(fnmatch.fnmatch(str(p.relative_to(pkg)), pat) for pat in patterns)]
    assert not missing, f'not installed by package_data: {missing}'


def test_data_files_install_launch_config_and_the_ament_marker(monkeypatch):
    kw = _setup_kwargs(monkeypatch)
    installed = {f for _, files in kw['data_files'] for f in files}
    expected = {'package.xml', 'resource/sgdfuse_ros', 'launch/sgdfuse.launch.py',
                'config/sgdfuse.yaml', 'config/fastdds_shm.xml', 'config/sgdfuse.rviz'}
    assert expected <= installed, expected - installed
    console = kw['entry_points']['console_scripts']
    assert any(c.startswith('sgdfuse_node =') for c in console)

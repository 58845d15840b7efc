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
    wanted = [p for sub in ('weights', 'data/samples', 'data/medical')
              for p in (pkg / sub).rglob('*') if p.is_file()]
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


def test_shipped_test_pairs_are_registered_small_and_attributed():
    """The pairs in test/data/ivif (what the tests run on without ../shared): every set the
    tests name, each pair the same size in both modalities, a few MB in all, each file listed
    with its origin in the README beside them."""
    from sgdfuse_ros.core import imaging

    root = REPO / 'test' / 'data' / 'ivif'
    readme = (root / 'README.md').read_text()
    sets = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert sets == ['FMB', 'M3FD', 'RoadScene', 'TNO']
    total = 0
    for name in sets:
        pairs, problems = imaging.match_pairs(root / name / 'ir', root / name / 'vi')
        assert pairs and not problems, problems
        assert f'| {name} |' in readme
        for p in pairs:
            ir, vis = imaging.read_image(p.ir, gray=True), imaging.read_image(p.vis)
            assert ir.shape == vis.shape[:2], p.name
            stem = p.name.removeprefix('FLIR_')
            assert stem in readme, f'{name}/{p.name} is not listed in {root / "README.md"}'
            total += p.ir.stat().st_size + p.vis.stat().st_size
    assert total < 4e6, f'{total / 1e6:.1f} MB of test pairs'


def test_ament_prefix_names_the_console_scripts_of_the_nodes(monkeypatch, tmp_path):
    """``sgdfuse ament-prefix`` writes what ``ros2 launch`` looks for: the index entry, the
    share files and one executable per node console script of setup.py, run by this Python."""
    import sys

    from sgdfuse_ros.tools.ament_prefix import EXECUTABLES, write_prefix

    console = dict(c.replace(' ', '').split('=') for c in
                   _setup_kwargs(monkeypatch)['entry_points']['console_scripts'])
    nodes = {name: target.split(':')[0] for name, target in console.items()
             if name.endswith('_node')}
    assert nodes == EXECUTABLES
    prefix = write_prefix(tmp_path / 'prefix')
    assert (prefix / 'share/ament_index/resource_index/packages/sgdfuse_ros').is_file()
    for rel in ('package.xml', 'launch/sgdfuse.launch.py', 'config/sgdfuse.yaml'):
        assert (prefix / 'share/sgdfuse_ros' / rel).is_file(), rel
    for name in EXECUTABLES:
        exe = prefix / 'lib/sgdfuse_ros' / name
        assert exe.stat().st_mode & 0o111
        assert exe.read_text().startswith(f'#!{sys.executable}\n')

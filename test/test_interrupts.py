"""Commands stopped by Ctrl-C or SIGTERM, and outputs that a failed write must not leave
half-written: every command exits with a message and no traceback, and the same command run
again finishes the job."""

import os
from pathlib import Path
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from sgdfuse_ros.core import imaging
from sgdfuse_ros.tools.cli import main
from sgdfuse_ros.tools.fuse import PARTIAL_LIST

REPO = Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, 'PYTHONPATH': str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', '')}


def _folders(ivif, root: Path, n: int) -> tuple[Path, Path]:
    """``n`` pairs (copies of one real pair) in ``root/ir`` and ``root/vi``."""
    ir, vi = root / 'ir', root / 'vi'
    ir.mkdir(parents=True)
    vi.mkdir()
    src = ivif / 'RoadScene'
    for i in range(n):
        shutil.copy(src / 'ir' / 'FLIR_00211.jpg', ir / f'p{i:04d}.jpg')
        shutil.copy(src / 'vi' / 'FLIR_00211.jpg', vi / f'p{i:04d}.jpg')
    return ir, vi


def test_list_methods_needs_no_inputs(capsys):
    assert main(['fuse', '--list-methods']) == 0
    assert 'mean' in capsys.readouterr().out
    assert main(['fuse', '--ir', 'x.png']) == 2
    assert 'required: --vis, --out' in capsys.readouterr().err


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_interrupted_folder_fuse_says_so_and_the_same_command_finishes(ivif, tmp_path, sig):
    """``sgdfuse fuse`` on a folder, stopped mid-way: exit 130, one line, no traceback; the
    outputs it wrote do not block the same command, which then fuses every pair (and a third
    run, with nothing of its own left, refuses to replace them without --overwrite)."""
    ir, vi = _folders(ivif, tmp_path, 400)
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'sgdfuse_ros.tools.cli', 'fuse', '--ir', str(ir), '--vis',
           str(vi), '--out', str(out), '--method', 'mean', '--quiet']
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob('*.png'))) < 3:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert 'Traceback' not in err and 'interrupted after' in err, err
    written = list(out.glob('*.png'))
    assert 0 < len(written) < 400, 'not interrupted mid-way'
    assert (out / PARTIAL_LIST).is_file()
    assert not list(out.glob('.*.tmp'))
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob('*.png'))) == 400 and not (out / PARTIAL_LIST).exists()
    size = imaging.read_image(ir / 'p0000.jpg').shape[:2]
    for path in written:
        assert imaging.read_image(path).shape[:2] == size
    third = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 2 and 'exists already' in third.stderr


def _limit_file_size(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.parametrize('folder', [False, True], ids=['pair', 'folder'])
def test_a_failed_write_leaves_no_truncated_image(ivif, tmp_path, folder):
    """A write that fails half-way (the file-size limit stands in for a full disk): one
    error line, exit 2, and no truncated image under the output's name, so the same command
    run again with room to write succeeds without --overwrite."""
    if folder:
        ir, vi = _folders(ivif, tmp_path, 3)
        out = tmp_path / 'out'
    else:
        ir = ivif / 'RoadScene' / 'ir' / 'FLIR_00211.jpg'
        vi = ivif / 'RoadScene' / 'vi' / 'FLIR_00211.jpg'
        out = tmp_path / 'fused.png'
    cmd = [sys.executable, '-m', 'sgdfuse_ros.tools.cli', 'fuse', '--ir', str(ir), '--vis',
           str(vi), '--out', str(out), '--method', 'mean', '--quiet']
    full = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_file_size(20_000))
    assert full.returncode == 2, full.stderr
    assert full.stderr.count('\n') == 1 and 'Traceback' not in full.stderr, full.stderr
    assert 'cannot write' in full.stderr, full.stderr
    pngs = list(out.glob('*.png')) if folder else [out] if out.exists() else []
    assert pngs == [], 'a truncated image was left'
    assert not list((out if folder else tmp_path).glob('.*.tmp'))
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    for path in (out.glob('*.png') if folder else [out]):
        assert imaging.read_image(path).ndim == 3


def _stop_when(proc, ready, sig, timeout: float = 120.0, after: float = 0.5):
    """Send ``sig`` to ``proc`` once ``ready()`` holds (then ``after`` s more); its stderr."""
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(after)
    assert proc.poll() is None, 'finished before the signal: make the input longer'
    proc.send_signal(sig)
    return proc.communicate(timeout=120)[1]


@pytest.fixture(scope='module')
def long_bag(tmp_path_factory):
    from sgdfuse_ros.ros.sample_bag import make_sample_bag

    root = tmp_path_factory.mktemp('bags')
    make_sample_bag(root / 'in', frames=300, progress=False)
    for name in ('a', 'b'):
        make_sample_bag(root / 'many' / name, frames=200, visible_size=(320, 240),
                        seed=ord(name), progress=False)
    return root


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_interrupted_bag_fuse_leaves_nothing_that_blocks_the_rerun(long_bag, tmp_path, sig):
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'sgdfuse_ros.tools.cli', 'bag', 'fuse', str(long_bag / 'in'),
           str(out), '--method', 'laplacian', '--quiet']
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    err = _stop_when(proc, lambda: any(out.glob('*.mcap')), sig)
    assert proc.returncode == 130 and 'interrupted' in err and 'Traceback' not in err, err
    assert not out.exists(), 'a partial bag was left'
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr


def test_fuse_many_on_sigterm_is_interrupted_and_resumes(long_bag, tmp_path):
    """``bag fuse-many`` (on a local Ray instance) stopped by SIGTERM, as by Ctrl-C: exit 130
    with its "interrupted ... resume" line, no stack dump; the same command then finishes."""
    from sgdfuse_ros import fleet

    if not fleet.ray_available():
        pytest.skip('needs Ray: pip install -e ".[cluster]"')
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'sgdfuse_ros.tools.cli', 'bag', 'fuse-many',
           str(long_bag / 'many'), '--out', str(out), '--method', 'laplacian', '--quiet',
           '--chunk', '5']
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    partial = out / fleet.manifest.PARTIAL_DIR  # workers write there once Ray is up
    err = _stop_when(proc, lambda: partial.is_dir() and any(partial.rglob('*')), signal.SIGTERM,
                     after=1.0)
    assert proc.returncode == 130, err
    assert 'interrupted' in err and 'resume' in err and 'Traceback' not in err, err
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize('entry', ['node', 'lifecycle'])
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_node_stopped_while_it_imports_exits_with_one_line(sig, entry):
    """``sgdfuse_node`` and ``sgdfuse_lifecycle_node`` (the console entries' code) stopped as
    soon as rclpy's library is loaded, in their start-up imports: exit 130 with one line, or,
    when the start-up was done already, the node's own clean stop; never a traceback."""
    pytest.importorskip('rclpy', reason='needs the ros extra (rclpy)')
    proc = subprocess.Popen([sys.executable, '-m', f'sgdfuse_ros.ros.{entry}'], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = Path(f'/proc/{proc.pid}/maps')
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            if '_rclpy_pybind11' in maps.read_text():
                break
        except OSError:
            pass
        time.sleep(0.002)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert 'Traceback' not in err, err
    assert ((proc.returncode == 130 and 'interrupted while starting' in err)
            or (proc.returncode == 0 and f'stopping on {sig.name}' in err)), err


def test_interrupted_masks_folder_run_is_finished_by_the_same_command(ivif, tmp_path):
    """``sgdfuse masks`` on a folder, stopped by SIGTERM mid-way: exit 130, one line; the same
    command then writes every pair's masks without --overwrite."""
    from sgdfuse_ros.tools.masks import PARTIAL_LIST as MASKS_LIST

    ir, vi = _folders(ivif, tmp_path, 150)
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'sgdfuse_ros.tools.cli', 'masks', '--ir', str(ir), '--vis',
           str(vi), '--out', str(out), '--provider', 'saliency', '--quiet']
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    err = _stop_when(proc, lambda: len(list(out.glob('*_overlay.png'))) >= 2, signal.SIGTERM,
                     after=0.0)
    assert proc.returncode == 130 and 'Traceback' not in err, err
    assert 'interrupted after' in err and (out / MASKS_LIST).is_file(), err
    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob('*.png'))) == 3 * 150 and not (out / MASKS_LIST).exists()

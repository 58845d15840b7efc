"""Fleet fusion (``sgdfuse bag fuse-many``): inputs, manifest, time ranges, and real Ray runs.

The tests without Ray (finding bags, the manifest, splitting a bag into time ranges) always
run. The Ray tests start real Ray instances, on loopback only: a local instance started by the
command itself, a two-node cluster of ``ray start`` processes on this machine, and a run whose
worker is killed mid-task. They are skipped only when Ray is not installed (the ``cluster``
extra).

Ray 2.60 replaces 127.0.0.1 by the machine's own address when it starts a node and then
listens on every interface; the two cluster nodes are started through :data:`RAY_START` so the
loopback address stays as given, and every driver gets the switch that keeps Ray on loopback.
"""

import json
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

pytest.importorskip('rosbags', reason='needs the ros extra (rosbags)')

from sgdfuse_ros import fleet  # noqa: E402
from sgdfuse_ros.fleet import ranges  # noqa: E402
from sgdfuse_ros.fleet.manifest import PARTIAL_DIR, Manifest, tree_digest  # noqa: E402
from sgdfuse_ros.fleet.plan import plan  # noqa: E402
from sgdfuse_ros.fleet import schedule  # noqa: E402
from sgdfuse_ros.fleet.schedule import RangePipeline  # noqa: E402
from sgdfuse_ros.fusion.pipeline import PipelineConfig  # noqa: E402
from sgdfuse_ros.params import DEFAULTS  # noqa: E402
from sgdfuse_ros.ros.bag_fuse import fuse_bag  # noqa: E402
from sgdfuse_ros.ros.bag_io import bag_info, read_messages, stamp_ns  # noqa: E402
from sgdfuse_ros.ros.sample_bag import make_sample_bag  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = (160, 120)
needs_ray = pytest.mark.skipif(not fleet.ray_available(),
                               reason='needs Ray: pip install -e ".[cluster]"')
#: ``python -c RAY_START start ...``: the ray CLI with loopback addresses kept as given.
RAY_START = ('import sys; import ray._private.services as s; '
             's.resolve_ip_for_localhost = lambda host: host; '
             'from ray.scripts.scripts import main; sys.argv[0] = "ray"; main()')


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER='0',
               RAY_AUTH_MODE='disabled', RAY_USAGE_STATS_ENABLED='0')
    env.update(extra)
    return env


def fuse_many(*args, timeout=240):
    """Run ``sgdfuse bag fuse-many ARGS --json`` in a new process; (exit status, summary)."""
    cmd = [sys.executable, '-m', 'sgdfuse_ros.tools.cli', 'bag', 'fuse-many', *map(str, args),
           '--json']
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    summary = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, summary, p.stderr


def fused_frames(path):
    """``(stamp, pixels)`` of the fused topic, in bag order."""
    return [(stamp_ns(m), bytes(m.data))
            for _, _, m in read_messages(path, DEFAULTS['fused_topic'])]


@pytest.fixture(scope='module')
def fleet_bags(tmp_path_factory):
    """Four small sample bags in two vehicle folders (mcap and sqlite3), one of them 30 s
    long, and a ``long`` bag on its own."""
    root = tmp_path_factory.mktemp('fleet') / 'in'
    specs = [('veh1/morning', 30, 'mcap'), ('veh1/evening', 24, 'sqlite3'),
             ('veh2/morning', 20, 'mcap'), ('veh2/long', 300, 'mcap')]
    for i, (name, frames, storage) in enumerate(specs):
        make_sample_bag(root / name, frames=frames, visible_size=SMALL, storage=storage,
                             seed=i, progress=False)
    return root


# --------------------------------------------------------------------------------------------
# Without Ray
# --------------------------------------------------------------------------------------------

def test_find_bags_names_and_refusals(fleet_bags, tmp_path):
    found = fleet.find_bags([fleet_bags], tmp_path / 'out')
    assert [b.name for b in found] == ['veh1/evening', 'veh1/morning', 'veh2/long',
                                       'veh2/morning']
    by_glob = fleet.find_bags([str(fleet_bags / 'veh1' / '*'), str(fleet_bags / '*' / 'long')])
    assert [b.name for b in by_glob] == ['evening', 'morning', 'long']
    listing = tmp_path / 'bags.txt'
    listing.write_text(f'# two bags\n{fleet_bags / "veh1/evening"}\n\n'
                       f'{fleet_bags / "veh2/long"}  # the long one\n')
    assert [b.name for b in fleet.find_bags([listing])] == ['evening', 'long']
    # the same bag twice counts once; the output folder is not searched
    out = fleet_bags / 'veh1' / 'fused'
    twice = fleet.find_bags([fleet_bags / 'veh1', fleet_bags / 'veh1/morning'], out)
    assert [b.name for b in twice] == ['evening', 'morning']
    with pytest.raises(fleet.InputError, match='both be written to'):
        fleet.find_bags([str(fleet_bags / 'veh*' / 'morning')])
    with pytest.raises(fleet.InputError, match='inside the input bag'):
        fleet.find_bags([fleet_bags / 'veh1/morning'], fleet_bags / 'veh1/morning' / 'x')
    with pytest.raises(fleet.InputError, match='would overwrite the input'):
        fleet.find_bags([fleet_bags / 'veh1/morning'], fleet_bags / 'veh1')
    # an input inside another bag's output, or an output that is a link to an input
    out = tmp_path / 'o'
    shutil.copytree(fleet_bags / 'veh2/morning', out / 'evening' / 'inner')
    with pytest.raises(fleet.InputError, match='the output of .*evening.* would overwrite'):
        fleet.find_bags([fleet_bags / 'veh1/evening', out / 'evening' / 'inner'], out)
    (out / 'morning').symlink_to(fleet_bags / 'veh1/morning')
    with pytest.raises(fleet.InputError, match='its output .* would overwrite the input'):
        fleet.find_bags([fleet_bags / 'veh1/morning'], out)
    with pytest.raises(fleet.InputError, match='no such bag'):
        fleet.find_bags([tmp_path / 'nothing'])
    bad = tmp_path / 'bad.txt'
    bad.write_text(f'{tmp_path}\n')
    with pytest.raises(fleet.InputError, match='bad.txt:1: .* is not a rosbag2 bag'):
        fleet.find_bags([bad])


class RecordingPipeline(RangePipeline):
    """A worker's pipeline that also records, per pair (its RGB stamp), a hash of the thermal
    frame it was given: which thermal frame each RGB frame was paired with."""

    def __init__(self, config):
        super().__init__(config)
        self.pairs = {}

    def fuse(self, thermal, visible, **kw):
        self.pairs[kw['name']] = hash(thermal.tobytes())
        return super().fuse(thermal, visible, **kw)


def _split(src, out, work, opts, pipe, *, chunk_s, margin_s):
    """Fuse ``src`` in ranges as the workers do (counts, ranges, assembly) into ``out``."""
    info = bag_info(src)
    rngs = ranges.plan_ranges(info['start_ns'], info['duration_s'], chunk_s=chunk_s,
                              margin_s=margin_s, tail_s=1.2)
    summary, check, records = ranges.fuse_in_ranges(src, out, work, rngs, pipeline=pipe,
                                                    kwargs=opts.bag_kwargs())
    return rngs, records, summary, check


def test_split_bag_has_the_pairs_of_the_unsplit_bag(fleet_bags, tmp_path):
    src = fleet_bags / 'veh2/long'
    opts = fleet.FuseOptions(pipeline=PipelineConfig(method='laplacian'))
    ref_pipe = RecordingPipeline(opts.pipeline_config())
    fuse_bag(src, tmp_path / 'ref' / 'long', pipeline=ref_pipe, progress=False,
             **opts.bag_kwargs())
    ref = fused_frames(tmp_path / 'ref' / 'long')
    stamps = [s for s, _ in ref]
    assert len(ref) == 300 and stamps == sorted(stamps)

    # The default margin: the gain has forgotten its start, the output is the unsplit bag's,
    # byte for byte.
    margin = ranges.auto_margin(10.0, slop=opts.slop, queue_size=opts.queue_size,
                                smoothing=0.9, mask_rate=opts.mask_rate)
    assert margin == pytest.approx(37.9)
    pipe = RecordingPipeline(opts.pipeline_config())
    rngs, records, summary, check = _split(src, tmp_path / 'split' / 'long', tmp_path / 'w1',
                                           opts, pipe, chunk_s=8.0, margin_s=margin)
    assert len(rngs) == 4 and sum(r['kept'] for r in records) == 300
    assert check == {'missing': 0, 'extra': 0, 'misaligned': 0} and summary.ok
    assert all(r['interval'] is None for r in records)  # laplacian: no masks to line up
    assert fused_frames(tmp_path / 'split' / 'long') == ref
    assert tree_digest(tmp_path / 'split' / 'long') == tree_digest(tmp_path / 'ref' / 'long')

    # A short margin: the same pairs in the same order, each range pairing every RGB frame
    # with the same thermal frame as the unsplit run; only pixels may differ.
    pipe = RecordingPipeline(opts.pipeline_config())
    rngs, records, summary, check = _split(src, tmp_path / 'short' / 'long', tmp_path / 'w2',
                                           opts, pipe, chunk_s=8.0, margin_s=2.0)
    for name, thermal in pipe.pairs.items():
        assert ref_pipe.pairs[name] == thermal, name
    assert check == {'missing': 0, 'extra': 0, 'misaligned': 0}
    assert [s for s, _ in fused_frames(tmp_path / 'short' / 'long')] == stamps
    assert summary.pairs_fused == 300 and not summary.failures


def test_split_bag_refreshes_masks_on_the_unsplit_frames(tmp_path):
    """The default method refreshes its masks every 5 frames counted from the first one
    fused: a range that starts mid-bag must count as the whole bag does, or every frame after
    differs. At the default margin the split output is the unsplit one byte for byte; a range
    told a wrong index for its first pair is caught (``misaligned``) and its frames differ."""
    src = tmp_path / 'in' / 'long'
    make_sample_bag(src, frames=600, visible_size=SMALL, progress=False, seed=5)
    opts = fleet.FuseOptions()  # auto: sgdfuse, with masks
    kw = opts.bag_kwargs()
    pipe = RangePipeline(opts.pipeline_config())
    assert pipe.method_name == 'sgdfuse' and pipe.method.uses_masks
    fuse_bag(src, tmp_path / 'ref' / 'long', pipeline=pipe, progress=False, **kw)
    ref = fused_frames(tmp_path / 'ref' / 'long')
    margin = ranges.auto_margin(10.0, slop=opts.slop, queue_size=opts.queue_size,
                                smoothing=0.9, mask_rate=opts.mask_rate)
    rngs, records, summary, check = _split(src, tmp_path / 'split' / 'long', tmp_path / 'w',
                                           opts, pipe, chunk_s=20.0, margin_s=margin)
    info = bag_info(src)
    assert len(rngs) == 3 and rngs[2].window_start_ns > info['start_ns']  # starts mid-bag
    assert [r['interval'] for r in records] == [5, 5, 5]
    assert records[2]['base'] % 5 == 0 and records[2]['base'] > 0
    # the window fused long enough before the range for gain and masks to forget its start
    assert records[2]['first_frame'] >= schedule.warmup_frames(0.9, 5) == 357
    assert check == {'missing': 0, 'extra': 0, 'misaligned': 0} and summary.ok
    assert fused_frames(tmp_path / 'split' / 'long') == ref
    assert tree_digest(tmp_path / 'split' / 'long') == tree_digest(tmp_path / 'ref' / 'long')

    # The last range counted one pair too many before it: caught, and its frames differ.
    first = sum(r['kept'] for r in records[:2])
    pipe.gain.reset()
    records[2] = ranges.fuse_range(src, tmp_path / 'w', rngs[2], pipeline=pipe, kwargs=kw,
                                   first_index=first + 1)
    summary, check = ranges.assemble(src, tmp_path / 'off' / 'long', rngs, records, kwargs=kw,
                                     method=pipe.method_name)
    assert check == {'missing': 0, 'extra': 0, 'misaligned': 1}
    got = fused_frames(tmp_path / 'off' / 'long')
    assert [s for s, _ in got] == [s for s, _ in ref]
    assert got[:first] == ref[:first] and sum(a != b for a, b in zip(got, ref)) > 100


def test_replay_reports_a_pair_no_range_fused(fleet_bags, tmp_path):
    src = fleet_bags / 'veh1/morning'
    opts = fleet.FuseOptions(pipeline=PipelineConfig(method='laplacian'))
    info = bag_info(src)
    rngs = ranges.plan_ranges(info['start_ns'], info['duration_s'], chunk_s=1.0,
                              margin_s=1.0, tail_s=1.0)
    pipe = RangePipeline(opts.pipeline_config())
    records = [ranges.fuse_range(src, tmp_path / 'w', r, pipeline=pipe,
                                 kwargs=opts.bag_kwargs()) for r in rngs]
    records[1] = dict(records[1], bag=None, error='lost')  # as if range 1 fused nothing
    summary, check = ranges.assemble(src, tmp_path / 'out', rngs, records,
                                     kwargs=opts.bag_kwargs(), method='laplacian')
    assert check['missing'] == records[1]['kept'] > 0
    assert len(summary.failures) == check['missing'] and not summary.ok
    assert all('no time range fused this pair' in why and 'lost' in why
               for _, why in summary.failures)


def test_plan_skips_checked_outputs_and_refuses_foreign_ones(fleet_bags, tmp_path):
    out = tmp_path / 'out'
    found = fleet.find_bags([fleet_bags / 'veh1'], out)
    opts = fleet.FuseOptions(pipeline=PipelineConfig(method='laplacian'))
    manifest = Manifest(out)
    # 'evening' was renamed into place but the run died before recording it done
    fuse_bag(fleet_bags / 'veh1/evening', out / 'evening', pipeline='laplacian',
                  progress=False)
    digest, size = tree_digest(out / 'evening')
    from sgdfuse_ros.fleet.manifest import input_fingerprint
    manifest.set('evening', {'state': 'finishing', 'sha256': digest, 'bytes': size,
                             'options_key': opts.key(),
                             'input_stat': input_fingerprint(fleet_bags / 'veh1/evening')})
    (out / 'morning').mkdir()  # something that is not ours
    p = plan(found, out, manifest, opts, chunk_s=600, margin_s=None)
    assert p.skipped == ['evening'] and manifest.get('evening')['state'] == 'done'
    assert [name for name, _ in p.failed] == ['morning']
    assert 'not an output of this manifest' in p.failed[0][1] and '--overwrite' in p.failed[0][1]
    assert Manifest.load(out).get('morning')['state'] == 'failed'
    p = plan(found, out, manifest, opts, chunk_s=600, margin_s=None, overwrite=True)
    assert [j.bag.name for j in p.jobs] == ['morning'] and not p.failed
    # other options, or a changed output: fused again
    other = fleet.FuseOptions(pipeline=PipelineConfig(method='max'))
    p = plan(found, out, manifest, other, chunk_s=600, margin_s=None)
    assert p.redo == [('evening', 'options changed')] and [j.bag.name for j in p.jobs] == [
        'evening']
    with open(next((out / 'evening').glob('*.db3')), 'ab') as f:
        f.write(b'\0')
    p = plan(found, out, manifest, opts, chunk_s=600, margin_s=None)
    assert p.redo == [('evening', 'output changed or missing')]


def test_without_ray_the_command_says_how_to_install_it(fleet_bags, tmp_path):
    hide = ('import sys; sys.modules["ray"] = None; from sgdfuse_ros.tools.cli import main; '
            'sys.exit(main(sys.argv[1:]))')
    run = [sys.executable, '-c', hide, 'bag']
    p = subprocess.run(run + ['fuse-many', str(fleet_bags), '--out', str(tmp_path / 'o')],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and 'sgdfuse_ros[cluster]' in p.stderr
    p = subprocess.run(run + ['fuse', str(fleet_bags / 'veh1/morning'), str(tmp_path / 'f'),
                              '--method', 'laplacian', '--quiet'],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and 'fused 30 of 30' in p.stdout


# --------------------------------------------------------------------------------------------
# With Ray
# --------------------------------------------------------------------------------------------

@needs_ray
def test_local_instance_fuses_resumes_and_records(fleet_bags, tmp_path):
    out = tmp_path / 'out'
    broken = tmp_path / 'extra' / 'broken'
    broken.mkdir(parents=True)
    (broken / 'metadata.yaml').write_text('not: a bag\n')
    code, s, err = fuse_many(fleet_bags, tmp_path / 'extra', '--out', out, '--method',
                             'laplacian', '--workers', '2')
    assert code == 1, err
    assert s['failed'] == [['broken', s['failed'][0][1]]] and 'metadata' in s['failed'][0][1]
    assert sorted(s['fused']) == ['veh1/evening', 'veh1/morning', 'veh2/long', 'veh2/morning']
    assert s['pairs_fused'] == s['pairs_matched'] == 30 + 24 + 20 + 300 and s['workers'] == 2
    assert set(s['unmatched']) == {DEFAULTS['thermal_topic'], DEFAULTS['rgb_topic']}
    assert s['output_bytes'] == sum(tree_digest(out / n)[1] for n in s['fused'])
    manifest = json.loads((out / fleet.MANIFEST_NAME).read_text())
    assert manifest['bags']['broken']['state'] == 'failed'
    assert not (out / PARTIAL_DIR).exists() and not (out / 'broken').exists()
    # each output is what `bag fuse` writes for the bag, byte for byte
    for name in ('veh1/evening', 'veh2/morning'):
        entry = manifest['bags'][name]
        assert entry['state'] == 'done' and entry['method'] == 'laplacian'
        ref = tmp_path / 'ref' / name
        fuse_bag(fleet_bags / name, ref, pipeline='laplacian', progress=False)
        assert tree_digest(out / name) == tree_digest(ref) == (entry['sha256'], entry['bytes'])
    assert manifest['bags']['veh1/evening']['storage'] == 'sqlite3'

    # A re-run with the broken bag gone: nothing to do, no Ray started.
    code, s, err = fuse_many(fleet_bags, '--out', out, '--method', 'laplacian')
    assert code == 0, err
    assert s['fused'] == [] and len(s['skipped']) == 4 and s['workers'] == 0
    # A damaged output is fused again, the others are kept.
    target = next((out / 'veh2/morning').glob('*.mcap'))
    target.write_bytes(target.read_bytes()[:-100])
    code, s, err = fuse_many(fleet_bags, '--out', out, '--method', 'laplacian', '--quiet')
    assert code == 0, err
    assert s['fused'] == ['veh2/morning'] and s['redone'] == [['veh2/morning',
                                                               'output changed or missing']]
    assert tree_digest(out / 'veh2/morning')[0] == manifest['bags']['veh2/morning']['sha256']
    # The output inside an input bag is refused.
    code, s, err = fuse_many(fleet_bags / 'veh1/morning', '--out',
                             fleet_bags / 'veh1/morning' / 'fused')
    assert code == 2 and 'inside the input bag' in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _ray_start(*args, temp_dir):
    cmd = [sys.executable, '-c', RAY_START, 'start', '--block', '--node-ip-address',
           '127.0.0.1', '--num-cpus', '1', '--object-store-memory', str(80 * 1024 * 1024),
           '--disable-usage-stats', *args]
    log = open(Path(temp_dir) / f'ray-{len(os.listdir(temp_dir))}.log', 'w')
    env = _env()
    env.pop('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER')  # a worker node must be allowed to join
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc) -> None:
    """Stop a ``ray start --block`` process: on SIGTERM it stops the node's processes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_nodes(address: str, n: int, timeout: float = 60.0) -> None:
    probe = (f'import ray; ray.init(address="{address}", logging_level="ERROR"); '
             'print(sum(1 for x in ray.nodes() if x["Alive"]))')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = subprocess.run([sys.executable, '-c', probe], env=_env(), capture_output=True,
                           text=True, timeout=60)
        if p.returncode == 0 and p.stdout.strip().endswith(str(n)):
            return
        time.sleep(1.0)
    raise AssertionError(f'the cluster at {address} did not reach {n} nodes')


@pytest.fixture(scope='module')
def cluster_run(fleet_bags, tmp_path_factory):
    """A two-node cluster on loopback (head + one worker node, one CPU each) fusing the bags
    with the default method, the long bag in ranges; the nodes are stopped afterwards."""
    temp_dir = tempfile.mkdtemp(prefix='sgr', dir='/tmp')  # Ray's socket paths must be short
    port = _free_port()
    procs = []
    try:
        procs.append(_ray_start('--head', '--port', str(port), '--include-dashboard', 'false',
                                '--temp-dir', temp_dir, temp_dir=temp_dir))
        address = f'127.0.0.1:{port}'
        _wait_nodes(address, 1)
        procs.append(_ray_start('--address', address, temp_dir=temp_dir))
        _wait_nodes(address, 2)
        out = tmp_path_factory.mktemp('cluster') / 'out'
        code, s, err = fuse_many(fleet_bags, '--out', out, '--address', address, '--chunk',
                                 '10', '--margin', '3')
        return code, s, err, out
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


@needs_ray
def test_two_node_cluster_fuses_every_bag(cluster_run):
    code, s, err, out = cluster_run
    assert code == 0, err
    assert s['nodes'] == 2 and s['workers'] == 2
    assert len(s['fused']) == 4 and s['pairs_fused'] == 374 and s['ok']
    assert s['boundary_missing'] == s['boundary_extra'] == s['boundary_misaligned'] == 0
    assert s['margin_pairs'] > 0
    manifest = json.loads((out / fleet.MANIFEST_NAME).read_text())
    long = manifest['bags']['veh2/long']
    assert long['ranges'] == 3 and long['method'] == 'sgdfuse'
    nodes = {n for e in manifest['bags'].values() for n in e['nodes']}
    assert len(nodes) == 2  # both nodes fused something
    frames = fused_frames(out / 'veh2/long')
    assert len(frames) == 300 and [f[0] for f in frames] == sorted(f[0] for f in frames)


def _children() -> dict:
    tree = {}
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(d.name))
    return tree


def _fusing_worker(root: int) -> int | None:
    """A Ray worker process below ``root`` that is running a fusion task."""
    tree, todo = _children(), [root]
    while todo:
        pid = todo.pop()
        for kid in tree.get(pid, []):
            try:
                title = Path(f'/proc/{kid}/cmdline').read_bytes().split(b'\0')[0]
            except OSError:
                continue
            if title.startswith(b'ray::FuseWorker.run'):
                return kid
            todo.append(kid)
    return None


@needs_ray
def test_killed_worker_loses_nothing_and_rerun_completes(fleet_bags, cluster_run, tmp_path):
    _, clean, _, clean_out = cluster_run
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'sgdfuse_ros.tools.cli', 'bag', 'fuse-many', str(fleet_bags),
           '--out', str(out), '--chunk', '10', '--margin', '3', '--retries', '0', '--json']
    driver = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    victim, deadline = None, time.monotonic() + 120
    while victim is None and driver.poll() is None and time.monotonic() < deadline:
        victim = _fusing_worker(driver.pid)
        time.sleep(0.05)
    assert victim is not None, 'no worker was seen fusing'
    time.sleep(0.5)  # inside a task: a bag, a range (about 130 pairs) or a range's count
    victim = _fusing_worker(driver.pid) or victim  # the count may be over: one that fuses now
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = driver.communicate(timeout=240)
    s = json.loads(stdout)
    assert driver.returncode == 1, stderr
    assert len(s['failed']) == 1 and 'worker died' in s['failed'][0][1]
    lost = s['failed'][0][0]
    assert not (out / lost).exists()  # nothing half-written under its name
    assert sorted(s['fused'] + [lost]) == sorted(clean['fused'])
    # the re-run fuses only what was lost, and every output equals the clean run's
    code, s, err = fuse_many(fleet_bags, '--out', out, '--chunk', '10', '--margin', '3')
    assert code == 0, err
    assert s['fused'] == [lost] and len(s['skipped']) == 3
    assert not (out / PARTIAL_DIR).exists()
    for name in clean['fused']:
        assert tree_digest(out / name) == tree_digest(clean_out / name), name
    a, b = fused_frames(out / 'veh2/long'), fused_frames(clean_out / 'veh2/long')
    assert len(a) == 300 and all(np.array_equal(np.frombuffer(x[1], np.uint8),
                                                np.frombuffer(y[1], np.uint8)) and x[0] == y[0]
                                 for x, y in zip(a, b))

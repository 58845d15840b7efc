"""The soak benchmark (``python -m sgdfuse_ros.tools.soak``) on a short run: the node in its own
process, busy processes beside it and gone afterwards, a burst of larger frames, and the figures
it reports."""

import os
import time

import pytest

pytest.importorskip('rclpy', reason='needs the ros extra (rclpy)')

from sgdfuse_ros.tools import soak  # noqa: E402

pytestmark = pytest.mark.ros


def test_busy_processes_burn_and_stop():
    procs = soak.start_busy(2, 30.0)
    try:
        time.sleep(0.5)
        assert all(p.poll() is None for p in procs)
    finally:
        soak.stop_processes(procs)
    assert all(p.poll() is not None for p in procs)
    short = soak.start_busy(1, 0.3)  # bounded in time even if nobody stops it
    assert short[0].wait(10) == 0
    with pytest.raises(ValueError, match=r'--busy must be in \[0, '):
        soak.start_busy(1000, 1.0)


def test_a_short_soak_reports_latency_gaps_drops_and_memory(capsys):
    r = soak.run_soak(duration=6.0, warmup=2.0, rate=15.0, size=(320, 240), busy=1,
                      params=['method:=mean'], trace=True, burst=((640, 480), 2.0),
                      log=lambda text: None)
    assert r['node_exit_code'] == 0 and r['node_error_lines'] == 0, r['node_error_sample']
    assert r['method'] == 'mean' and r['errors_total'] == 0
    assert 0.8 * 8 * 15 <= r['pairs_sent'] <= 8 * 15 + 1
    assert r['fused_received'] >= 0.5 * r['pairs_sent'], r
    lat = r['latency_ms']
    assert 0 < lat['p50'] <= lat['p90'] <= lat['p99'] <= lat['max'] < 1000
    assert r['gap_ms']['p50'] < 500 and r['gaps_over_1s'] == 0
    assert set(r['dropped']) == {'stale', 'late_at_take', 'late_at_publish',
                                 'thermal_nonfinite'}
    mem = r['memory_mb']
    assert mem['samples'] and 50 < mem['start'] < 4000 and mem['growth_pct'] is not None
    assert r['burst']['size'] == '640x480' and r['burst']['peak'] >= r['burst']['before']
    steps = r['timeline']['steps']
    assert r['timeline']['frames'] >= 0.5 * r['fused_received']
    assert steps['fuse']['p50'] >= 0 and steps['latency']['p50'] == pytest.approx(
        lat['p50'], rel=0.5)
    assert r['load'] and r['worst_gaps']
    text = soak.format_report(r)
    for needle in ('stamp -> fused frame received', 'gap between fused frames', 'node RSS',
                   'burst of 640x480', 'where the time goes', 'longest gaps'):
        assert needle in text, needle
    assert os.path.isfile(r['node_log'])


def test_the_soak_process_exits_cleanly_after_hd_frames():
    """The soak's own process (rclpy executor thread, a node busy with 1920x1080 pairs at
    15 Hz) exits 0 with no ``terminate called`` abort and no traceback."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, '-m', 'sgdfuse_ros.tools.soak', '--duration', '3',
                        '--warmup', '1', '--size', '1920x1080', '--param', 'method:=mean'],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'terminate called' not in p.stderr and 'Traceback' not in p.stderr, p.stderr[-3000:]

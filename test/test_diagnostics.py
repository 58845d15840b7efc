"""The node's /diagnostics content, computed without ROS (sgdfuse_ros.ros.diagnostics)."""

from sgdfuse_ros.core.matching import DROP_REASONS
from sgdfuse_ros.ros import diagnostics as d

COUNTERS = {'thermal_received': 30, 'rgb_received': 31, 'pairs': 30, 'published': 28,
            'dropped': {'stale': 2, 'late_at_take': 1}, 'thermal_nonfinite_pixels': 7,
            'thermal_nonfinite_frames': 3, 'sync_dropped': {'superseded': [0, 1]}, 'errors': {},
            'last_error': ''}
IDENTITY = {'method': 'sgdfuse', **d.backend_values({'stage1': 'onnxruntime (CPU, 2 threads)',
                                                     'refiner': 'tensorrt (sm89, fp16)'})}


def _report(**kw):
    args = dict(now=100.0, started=90.0, identity=IDENTITY, counters=COUNTERS,
                rates={k: 10.0 for k in d.RATE_KEYS}, new_errors=0,
                streams=[('thermal', '/t', 99.9), ('rgb', '/c', 99.95)], stream_timeout=1.0,
                masks={}, latency={'fuse': (20.0, 30.0)})
    args.update(kw)
    return d.build_report(**args)


def test_a_healthy_node_reports_ok_with_its_backends():
    r = _report()
    assert r.level == d.OK and r.message == 'fusing at 10.0 Hz with sgdfuse' and not r.warnings
    v = r.values
    assert list(v)[:4] == ['method', 'backend', 'backend_stage1', 'backend_refiner']
    assert v['backend'] == 'onnxruntime, tensorrt'
    assert v['backend_refiner'] == 'tensorrt (sm89, fp16)'
    assert v['pairs_dropped_stale'] == '2' and v['latency_fuse_ms'] == 'mean 20.0, p95 30.0'
    assert v['pairs_dropped_late_at_take'] == '1' and v['pairs_dropped_late_at_publish'] == '0'
    assert v['pairs_dropped_thermal_nonfinite'] == '0'
    assert (v['thermal_nonfinite_pixels'], v['thermal_nonfinite_frames']) == ('7', '3')
    assert {f'sync_dropped_{r}' for r in DROP_REASONS} <= set(v)
    assert v['sync_dropped_superseded'] == 'thermal 0, rgb 1'
    assert d.backend_values({}) == {'backend': 'none (no network)'}
    assert d.backend_values(None)['backend'].startswith('unknown')
    assert d.backend_text({'stage1': 'onnxruntime'}) == 'stage1 on onnxruntime'


def test_stopped_streams_errors_and_old_masks_warn():
    masks = {'provider': 'saliency', 'refreshes': 3, 'median_compute_ms': 21.0, 'age_s': 4.0,
             'errors': 0, 'stale': True, 'max_age_s': 1.0, 'last_error': None}
    r = _report(streams=[('thermal', '/t', 97.0), ('rgb', '/c', None)], new_errors=2,
                counters={**COUNTERS, 'errors': {'input': 2}, 'last_error': 'input: bad'},
                masks=masks)
    assert r.level == d.WARN
    assert 'thermal stream stopped (3.0 s without a frame)' in r.message
    assert 'no rgb frame yet (10.0 s since start)' in r.message
    assert '2 error(s) in the last period; last: input: bad' in r.message
    assert 'masks are 4.0 s old (mask_max_age 1.0 s)' in r.message
    assert [name for name, _ in r.warnings] == ['thermal', 'rgb', 'masks']
    assert r.values['errors_input'] == '2' and r.values['mask_age_s'] == '4.00'
    assert r.values['mask_compute_ms'] == 'median 21'


def test_rates_and_latency_window():
    rates = d.Rates()
    assert rates.update(0.0, {'fused': 5}) == ({'fused': 0.0}, {'fused': 0})
    assert rates.update(2.0, {'fused': 25}) == ({'fused': 10.0}, {'fused': 20})
    stats = d.latency_stats([{'total': 10.0, 'stage1': 4.0}, {'total': 30.0, 'node': 1.0}])
    assert list(stats) == ['total', 'node', 'stage1'] and stats['total'][0] == 20.0


def test_late_pairs_with_nothing_published_warn():
    """Pairs dropped as older than max_latency while others are published is the policy at
    work; late pairs and nothing published means the node cannot meet max_latency at all."""
    some = _report(new_late=3, new_fused=12, max_latency=0.2)
    assert some.level == d.OK and not some.warnings
    none = _report(new_late=15, new_fused=0, max_latency=0.2,
                   latency={'total': (310.0, 400.0)})
    assert none.level == d.WARN
    assert ('15 pair(s) older than max_latency (0.2 s) dropped and none published in the last '
            'period; fusion takes 310 ms') in none.message
    assert [name for name, _ in none.warnings] == ['latency']
    assert 'raise max_latency' in none.warnings[0][1]

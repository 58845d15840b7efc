"""What ``sgdfuse_node`` reports on ``/diagnostics``, computed from its counters.

:func:`build_report` turns one snapshot of the node (counters, rates, stream arrivals, the
method and its networks' backends, the mask figures, the latency window) into a
:class:`Report`: a level, a one-line message, the key/value pairs and the warnings to log. It
needs no ROS; :func:`to_msg` wraps a report into a ``diagnostic_msgs/DiagnosticArray``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from sgdfuse_ros.core.matching import DROP_REASONS

#: ``diagnostic_msgs/DiagnosticStatus`` levels used here.
OK, WARN = 0, 1
#: Latency figures reported first (ms): the pipeline's stages, then the node's (``queue_wait``
#: in the slot, ``convert`` messages -> arrays, ``publish`` building and sending, ``node`` all
#: of the worker's time), and the age of a pair (node clock minus its RGB stamp) at each step:
#: ``age_receipt`` when the synchronizer completed it, ``age_take`` when the worker took it,
#: ``age_fused`` when its fused frame was ready, ``age`` after publishing. Other stages a
#: method reports (e.g. ``stage1``) follow.
LATENCY_KEYS = ('age_receipt', 'queue_wait', 'age_take', 'convert', 'thermal', 'color', 'masks',
                'resize', 'fuse', 'merge', 'total', 'age_fused', 'publish', 'node', 'age')
#: The counters whose per-second rates are reported.
RATE_KEYS = ('thermal', 'rgb', 'pairs', 'fused', 'errors', 'late')
#: Why the node dropped a synchronized pair without publishing it (errors aside): ``stale``: a
#: newer pair replaced it while the worker was busy; ``late_at_take`` / ``late_at_publish``:
#: older than ``max_latency`` when the worker took it / when its fused frame was ready;
#: ``thermal_nonfinite``: NaN or infinite thermal pixels and ``thermal_nonfinite`` is reject.
PAIR_DROP_REASONS = ('stale', 'late_at_take', 'late_at_publish', 'thermal_nonfinite')


@dataclass
class Report:
    """One diagnostics status: level (:data:`OK` or :data:`WARN`), message, key/value pairs,
    and ``(stream, text)`` warnings for the node to log."""

    level: int
    message: str
    values: dict[str, str]
    warnings: list[tuple[str, str]] = field(default_factory=list)


class Rates:
    """Per-second rates of growing counters between two calls."""

    def __init__(self):
        self._prev: tuple[float, dict[str, int]] | None = None

    def update(self, now: float, totals: Mapping[str, int]) -> tuple[dict[str, float],
                                                                     dict[str, int]]:
        """Rates since the previous call (zeros the first time) and the increments."""
        rates = {k: 0.0 for k in totals}
        grown = {k: 0 for k in totals}
        if self._prev is not None:
            t_prev, prev = self._prev
            dt = max(now - t_prev, 1e-6)
            grown = {k: totals[k] - prev.get(k, 0) for k in totals}
            rates = {k: grown[k] / dt for k in totals}
        self._prev = (now, dict(totals))
        return rates, grown


def latency_stats(window: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and 95th percentile (ms) of each latency figure over ``window`` (per-frame
    timings), :data:`LATENCY_KEYS` first."""
    out = {}
    seen = {k for t in window for k in t}
    for key in [k for k in LATENCY_KEYS if k in seen] + sorted(seen - set(LATENCY_KEYS)):
        vals = [t[key] for t in window if key in t]
        if vals:
            out[key] = (float(np.mean(vals)), float(np.percentile(vals, 95)))
    return out


def backend_values(report: Mapping[str, str] | None) -> dict[str, str]:
    """The ``backend`` key (the backends that really run the networks; ``none`` for a method
    without one, ``unknown`` for a method that does not report them) and a
    ``backend_<network>`` key per network."""
    if report is None:
        return {'backend': 'unknown (the method does not report its backends)'}
    names = list(dict.fromkeys(line.split(' ', 1)[0].split(';')[0]
                               for line in report.values()))
    values = {'backend': ', '.join(names) if names else 'none (no network)'}
    values.update({f'backend_{net}': line for net, line in report.items()})
    return values


def backend_text(report: Mapping[str, str] | None) -> str:
    """The backends for the start-up log line: ``stage1 on X, refiner on Y``, ``no
    network`` or ``backends not reported``."""
    if report is None:
        return 'backends not reported'
    if not report:
        return 'no network'
    return ', '.join(f'{net} on {line}' for net, line in report.items())


def build_report(*, now: float, started: float, identity: Mapping[str, str],
                 counters: Mapping[str, Any], rates: Mapping[str, float], new_errors: int,
                 streams: Sequence[tuple[str, str, float | None]], stream_timeout: float,
                 masks: Mapping[str, Any], latency: Mapping[str, tuple[float, float]],
                 new_late: int = 0, new_fused: int = 0, max_latency: float = 0.0) -> Report:
    """The node's status (see the module docstring).

    ``identity``: method, backends, sync, conversion... (reported first). ``streams``:
    ``(name, topic, last arrival or None)`` per input, checked against ``stream_timeout``
    seconds (counted from ``started`` before the first frame). ``masks``:
    ``FusionStream.mask_stats()`` (empty for a method without masks). ``new_late`` and
    ``new_fused``: pairs dropped as older than ``max_latency`` and frames published since the
    last report (late pairs and nothing published is a warning: the node is too slow for
    ``max_latency``, or the cameras' clock is off). Times are ``time.monotonic()`` seconds.
    """
    level, problems, warnings = OK, [], []
    for name, topic, last in streams:
        waited = now - (last if last is not None else started)
        if waited > stream_timeout:
            level = WARN
            text = (f'no {name} frame yet ({waited:.1f} s since start)' if last is None
                    else f'{name} stream stopped ({waited:.1f} s without a frame)')
            problems.append(text)
            warnings.append((name, f'{text} on {topic}'))
    if new_late and not new_fused:
        level = WARN
        fuse = latency.get('total')
        took = f'; fusion takes {fuse[0]:.0f} ms' if fuse else ''
        text = (f'{new_late} pair(s) older than max_latency ({max_latency:g} s) dropped and '
                f'none published in the last period{took}')
        problems.append(text)
        warnings.append(('latency', f'{text}: raise max_latency, lower the load, or check the '
                                    "cameras' clock against this node's"))
    if new_errors:
        level = WARN
        problems.append(f'{new_errors} error(s) in the last period; last: '
                        f'{counters["last_error"]}')

    c = counters
    values = dict(identity)
    values.update({
        'thermal_rate_hz': f'{rates["thermal"]:.2f}',
        'rgb_rate_hz': f'{rates["rgb"]:.2f}',
        'pair_rate_hz': f'{rates["pairs"]:.2f}',
        'fused_rate_hz': f'{rates["fused"]:.2f}',
        'thermal_received': str(c['thermal_received']),
        'rgb_received': str(c['rgb_received']),
        'pairs_synced': str(c['pairs']),
        'fused_published': str(c['published']),
        **{f'pairs_dropped_{r}': str(c['dropped'].get(r, 0)) for r in PAIR_DROP_REASONS},
        'thermal_nonfinite_pixels': str(c.get('thermal_nonfinite_pixels', 0)),
        'thermal_nonfinite_frames': str(c.get('thermal_nonfinite_frames', 0)),
        'thermal_gain_held_frames': str(c.get('thermal_gain_held', 0)),
        'errors_total': str(sum(c['errors'].values())),
    })
    for reason in DROP_REASONS:
        counts = c['sync_dropped'].get(reason, [0, 0])
        values[f'sync_dropped_{reason}'] = f'thermal {counts[0]}, rgb {counts[1]}'
    for kind, n in sorted(c['errors'].items()):
        values[f'errors_{kind}'] = str(n)
    values['last_error'] = c['last_error']
    if masks:
        values['mask_provider'] = str(masks.get('provider', ''))
        values['mask_refreshes'] = str(masks['refreshes'])
        values['mask_compute_ms'] = ('' if masks['median_compute_ms'] is None
                                     else f'median {masks["median_compute_ms"]:.0f}')
        values['mask_age_s'] = '' if masks['age_s'] is None else f'{masks["age_s"]:.2f}'
        values['mask_errors'] = str(masks['errors'])
        if masks['stale'] and now - started > masks['max_age_s']:
            level = WARN
            text = ('no masks yet' if masks['age_s'] is None else
                    f'masks are {masks["age_s"]:.1f} s old (mask_max_age '
                    f'{masks["max_age_s"]:.1f} s)')
            problems.append(text)
            warnings.append(('masks', f'{text}; fusing with the latest masks (last mask error: '
                                      f'{masks["last_error"]})'))
    for key, (mean, p95) in latency.items():
        values[f'latency_{key}_ms'] = f'mean {mean:.1f}, p95 {p95:.1f}'
    message = '; '.join(problems) if problems else (
        f'fusing at {rates["fused"]:.1f} Hz with {identity.get("method", "")}')
    return Report(level, message, values, warnings)


def to_msg(report: Report, *, name: str, stamp):
    """A ``DiagnosticArray`` holding ``report`` as one status named ``name``."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(
        level=DiagnosticStatus.WARN if report.level == WARN else DiagnosticStatus.OK,
        name=name, hardware_id='sgdfuse_ros', message=report.message,
        values=[KeyValue(key=k, value=v) for k, v in report.values.items()])
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = stamp
    return arr


__all__ = ['LATENCY_KEYS', 'OK', 'PAIR_DROP_REASONS', 'RATE_KEYS', 'Rates', 'Report', 'WARN',
           'backend_text', 'backend_values', 'build_report', 'latency_stats', 'to_msg']

"""Long bags in time ranges: fused in parallel, put back together in order.

A bag longer than a chunk is cut into ranges ``[start, end)`` of its log time. Each range is
fused on its own (:func:`fuse_range`):

1. its thermal and RGB messages logged in ``[start - margin, end + margin)`` are copied, as
   recorded, into a temporary sub-bag;
2. :func:`~sgdfuse_ros.ros.bags.fuse_bag` fuses that sub-bag (only the fused topic);
3. the fused frames whose stamp (the RGB header's) lies in ``[start, end)`` belong to the
   range; the first range is open below and the last one above, so no frame falls outside.

The margin before ``start`` warms the pipeline up: the pairing rule settles (it remembers at
most ``queue_size`` frames per camera) and the thermal gain's moving average forgets its first
frame. A nearly forgotten start is not enough: methods that select per pixel (the Laplacian
pyramid's largest-detail rule, the networks' saturations) turn a 1e-4 difference of gain into
a jump of tens of levels at a few pixels. So the default margin (:func:`auto_margin`) lasts
until the average has forgotten its start below float64 resolution: from there on the gain,
hence every fused frame, is bit-identical to an unsplit run's. The margin after ``end``
(:func:`tail_margin`) only has to cover the pairing of the frames just before ``end``.

:func:`assemble` then writes the final bag with :func:`~sgdfuse_ros.ros.bags.fuse_bag` over the
whole input, with a :class:`ReplayPipeline` in place of the networks: the bag is paired once
more exactly as an unsplit run pairs it, every pair gets the frame its range fused, and the
output (original topics, log times, headers, summary) is written as ``bag fuse`` writes it. A
pair that no range fused, or a range frame no pair asked for, is counted (``missing`` /
``extra``); neither happens when the margin is wide enough (see docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import os
from pathlib import Path
import re
import shutil
import time
from typing import Any, Iterator

import numpy as np

from sgdfuse_ros.fusion.pipeline import FusionPipeline, FusionResult, PipelineConfig
from sgdfuse_ros.ros import bags
from sgdfuse_ros.ros.bags import BagError, FuseSummary

#: The thermal gain's moving average has forgotten its first frame completely once what is left
#: of it (smoothing ** n) is below float64 resolution.
GAIN_TOLERANCE = 2.0 ** -53
#: Shortest margin, seconds, whatever the rate.
MIN_MARGIN_S = 1.0
#: Frames kept waiting for their pair beyond this many seconds past the one asked for mean the
#: asked-for pair was fused by no range.
REPLAY_HORIZON_NS = 5_000_000_000
_PAIR_NAME = re.compile(r'@ (\d+)\.(\d{9})$')


@dataclass(frozen=True)
class TimeRange:
    """Range ``index``: fused frames with stamps in ``[start_ns, end_ns)`` (None: open), from
    the messages logged in ``[window_start_ns, window_end_ns)``."""

    index: int
    start_ns: int | None
    end_ns: int | None
    window_start_ns: int
    window_end_ns: int

    def holds(self, stamp: int) -> bool:
        return ((self.start_ns is None or stamp >= self.start_ns)
                and (self.end_ns is None or stamp < self.end_ns))


def warmup_frames(smoothing: float) -> int:
    """Frames after which the thermal gain (a moving average with ``smoothing``) no longer
    depends on where it started: 349 for the default 0.9, 0 without smoothing."""
    if smoothing <= 0:
        return 0
    return math.ceil(math.log(GAIN_TOLERANCE) / math.log(smoothing))


def auto_margin(rate_hz: float, *, slop: float, smoothing: float) -> float:
    """Seconds of margin before a range: :func:`warmup_frames` at the bag's rate, and at least
    4 x ``slop`` and :data:`MIN_MARGIN_S`. 35 s at 10 Hz with the default smoothing."""
    warm = warmup_frames(smoothing) / rate_hz if rate_hz > 0 else 0.0
    return max(MIN_MARGIN_S, 4 * slop, warm)


def tail_margin(rate_hz: float, *, slop: float, queue_size: int) -> float:
    """Seconds of margin after a range: a pair is emitted when its later frame arrives, so a
    few frames past the end (a full queue) and 4 x ``slop`` are enough."""
    frames = (queue_size + 2) / rate_hz if rate_hz > 0 else 0.0
    return max(MIN_MARGIN_S, 4 * slop, frames)


def plan_ranges(start_ns: int, duration_s: float, *, chunk_s: float, margin_s: float,
                tail_s: float | None = None) -> list[TimeRange]:
    """Equal ranges of at most about ``chunk_s`` covering the bag, read with ``margin_s``
    before and ``tail_s`` (default ``margin_s``) after them; one range (the whole bag) when
    the bag is shorter than 1.5 chunks or ``chunk_s`` is 0."""
    end_all = start_ns + int(round(duration_s * 1e9)) + 1
    if chunk_s <= 0 or duration_s < 1.5 * chunk_s:
        return [TimeRange(0, None, None, start_ns, end_all)]
    n = max(2, round(duration_s / chunk_s))
    lead = int(round(margin_s * 1e9))
    tail = lead if tail_s is None else int(round(tail_s * 1e9))
    edges = [start_ns + (end_all - start_ns) * k // n for k in range(n + 1)]
    return [TimeRange(k, None if k == 0 else edges[k], None if k == n - 1 else edges[k + 1],
                      max(start_ns, edges[k] - lead), min(end_all, edges[k + 1] + tail))
            for k in range(n)]


def write_sub_bag(src: str | os.PathLike, dst: str | os.PathLike, topics: list[str],
                  start_ns: int, stop_ns: int) -> dict[str, int]:
    """Copy the messages of ``topics`` logged in ``[start_ns, stop_ns)`` from ``src`` into a
    new mcap bag ``dst``, unchanged (raw CDR, log times, connections). Returns the count per
    topic."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    src, dst = Path(src), Path(dst)
    ts = bags.typestore()
    counts = {t: 0 for t in topics}
    try:
        reader = Reader(src)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - any unreadable bag
        raise BagError(f'{src}: cannot open the bag ({type(exc).__name__}: {exc})') from exc
    writer = None
    try:
        writer = Writer(dst, version=bags.BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        conns = [c for c in reader.connections if c.topic in counts]
        made: dict[tuple[str, str], Any] = {}
        out = {}
        for c in conns:
            key = (c.topic, c.msgtype)
            if key not in made:
                qos = list(getattr(c.ext, 'offered_qos_profiles', []) or [])
                made[key] = writer.add_connection(c.topic, c.msgtype, typestore=ts,
                                                  offered_qos_profiles=qos)
            out[c.id] = made[key]
        for conn, log_ns, raw in reader.messages(connections=conns, start=start_ns,
                                                 stop=stop_ns):
            writer.write(out[conn.id], log_ns, raw)
            counts[conn.topic] += 1
        writer.close()
        writer = None
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - reading or writing
        raise BagError(f'{src}: cannot copy the range into {dst} ({type(exc).__name__}: '
                       f'{exc})') from exc
    finally:
        reader.close()
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass
    return counts


def fuse_range(src: str | os.PathLike, work: str | os.PathLike, rng: TimeRange, *,
               pipeline, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Fuse range ``rng`` of bag ``src`` in the folder ``work`` (see the module docstring).

    ``kwargs`` are :func:`.bags.fuse_bag`'s (from :meth:`.FuseOptions.bag_kwargs`). Returns
    a JSON-ready record: ``bag`` (the fused-only bag of the window, or None when the window
    holds no pair), ``kept`` (its frames inside the range), ``failures`` (pairs inside the range
    that could not be fused, ``[stamp, reason]``), ``error`` (why the window fused nothing),
    ``window_pairs`` and ``fuse_ms`` (work done, margins included).
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    sub, fused = work / f'window-{rng.index:04d}', work / f'fused-{rng.index:04d}'
    for p in (sub, fused):
        shutil.rmtree(p, ignore_errors=True)
    rec: dict[str, Any] = {'index': rng.index, 'start_ns': rng.start_ns, 'end_ns': rng.end_ns,
                           'bag': None, 'kept': 0, 'failures': [], 'error': None,
                           'window_pairs': 0, 'fuse_ms': 0.0}
    topics = [kwargs['thermal_topic'], kwargs['rgb_topic']]
    t0 = time.perf_counter()
    counts = write_sub_bag(src, sub, topics, rng.window_start_ns, rng.window_end_ns)
    try:
        if min(counts.values()) == 0:
            rec['error'] = 'no thermal/RGB frames in the range'
            return rec
        part_kwargs = dict(kwargs, only_fused=True, storage='mcap')
        try:
            summary = bags.fuse_bag(sub, fused, pipeline=pipeline, progress=False,
                                    **part_kwargs)
        except BagError as exc:
            rec['error'] = str(exc)
            return rec
    finally:
        shutil.rmtree(sub, ignore_errors=True)
    rec['bag'] = str(fused)
    rec['window_pairs'] = summary.pairs_fused
    rec['fuse_ms'] = float(sum(summary.fuse_ms))
    rec['failures'] = [[s, why] for s, why in summary.failures if rng.holds(s)]
    rec['kept'] = sum(1 for stamp, _ in _fused_frames(fused, kwargs['fused_topic'], rng,
                                                      decode=False))
    rec['elapsed_s'] = time.perf_counter() - t0
    return rec


def _fused_frames(path: str | os.PathLike, topic: str, rng: TimeRange, *, decode: bool = True
                  ) -> Iterator[tuple[int, np.ndarray | None]]:
    """``(stamp, image)`` of the fused frames of a range's bag that lie inside the range."""
    for _, _, msg in bags.read_messages(path, topic):
        stamp = bags.stamp_ns(msg)
        if not rng.holds(stamp):
            continue
        if not decode:
            yield stamp, None
            continue
        channels = 3 if msg.encoding == 'rgb8' else 1
        img = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, channels)
        yield stamp, (img if channels == 3 else img[:, :, 0])


class ReplayPipeline(FusionPipeline):
    """The pipeline of :func:`assemble`: ``fuse`` returns the frame that a range fused for
    the pair (found by the pair's RGB stamp), or raises the range's error for a pair that
    failed there. It is built on the ``mean`` baseline (no weights, no masks), which it never
    runs; it reports the ranges' method.

    Frames are streamed from the ranges' bags in order, with a small look-ahead buffer (pairs
    come in nearly stamp order), so memory stays flat however long the bag.
    """

    def __init__(self, ranges: list[TimeRange], records: list[dict[str, Any]], *,
                 fused_topic: str, method: str):
        super().__init__(PipelineConfig(method='mean'))
        self._method = method
        self._failures = {int(s): why for r in records for s, why in r['failures']}
        self._errors = [r['error'] for r in records if r.get('error')]
        self._frames = self._stream(ranges, records, fused_topic)
        self._buffer: dict[int, np.ndarray] = {}
        self._newest: int | None = None
        self._dropped = 0
        self.missing = 0

    @staticmethod
    def _stream(ranges, records, topic) -> Iterator[tuple[int, np.ndarray]]:
        by_index = {r['index']: r for r in records}
        for rng in ranges:
            rec = by_index.get(rng.index)
            if rec is not None and rec.get('bag'):
                yield from _fused_frames(rec['bag'], topic, rng)

    @property
    def method_name(self) -> str:
        return self._method

    def fuse(self, thermal, visible, *, name: str = 'frame', masks=None) -> FusionResult:
        m = _PAIR_NAME.search(name)
        if m is None:
            raise RuntimeError(f'{name}: cannot tell the pair stamp from its name')
        stamp = int(m.group(1)) * 1_000_000_000 + int(m.group(2))
        if stamp in self._failures:
            raise ValueError(self._failures.pop(stamp))
        while stamp not in self._buffer:
            if self._newest is not None and self._newest > stamp + REPLAY_HORIZON_NS:
                break
            nxt = next(self._frames, None)
            if nxt is None:
                break
            self._buffer[nxt[0]] = nxt[1]
            self._newest = nxt[0] if self._newest is None else max(self._newest, nxt[0])
        image = self._buffer.pop(stamp, None)
        stale = [s for s in self._buffer if s < stamp - REPLAY_HORIZON_NS]
        for s in stale:  # never asked for, and no pair that old will come: extra frames
            del self._buffer[s]
        self._dropped += len(stale)
        if image is None:
            self.missing += 1
            why = f'; ranges that fused nothing: {"; ".join(self._errors)}' if self._errors \
                else ''
            raise ValueError(f'{name}: no time range fused this pair{why}')
        return FusionResult(image=image, luma=None, ir=None, method=self._method)

    def extra(self) -> int:
        """Range frames that no pair of the whole bag asked for (drains the stream)."""
        return self._dropped + len(self._buffer) + sum(1 for _ in self._frames)


def assemble(src: str | os.PathLike, out: str | os.PathLike, ranges: list[TimeRange],
             records: list[dict[str, Any]], *, kwargs: dict[str, Any], method: str
             ) -> tuple[FuseSummary, dict[str, int]]:
    """Write the final bag ``out`` of ``src`` from the ranges' fused frames (see the module
    docstring). Returns the summary of the whole bag and ``{'missing', 'extra'}``: pairs that
    no range fused (they are also in the summary's failures) and range frames left over."""
    replay = ReplayPipeline(ranges, records, fused_topic=kwargs['fused_topic'], method=method)
    summary = bags.fuse_bag(src, out, pipeline=replay, progress=False, **kwargs)
    return summary, {'missing': replay.missing, 'extra': replay.extra()}

"""Long bags in time ranges: fused in parallel, put back together in order.

A bag longer than a chunk is cut into ranges ``[start, end)`` of its log time. Each range is
fused on its own (:func:`fuse_range`):

1. its thermal and RGB messages logged in ``[start - margin, end + tail)`` are copied, as
   recorded, into a temporary sub-bag (its window);
2. :func:`~sgdfuse_ros.ros.bag_fuse.fuse_bag` fuses that sub-bag (only the fused topic),
   starting on a pair that the whole bag refreshes its masks on (:mod:`.schedule`: the
   whole bag's pair numbering comes from the pair counts of the ranges before, made first by
   :func:`~.schedule.count_range_pairs`);
3. the fused frames whose stamp (the RGB header's) lies in ``[start, end)`` belong to the
   range; the first range is open below and the last one above, so no frame falls outside.

The margin before ``start`` warms the pipeline up: the pairing rule settles (it remembers at
most ``queue_size`` frames per camera), the thermal gain's moving average forgets its first
frame below float64 resolution and the masks are refreshed from then on
(:func:`~.schedule.warmup_frames`). From there on every fused frame is bit-identical to an
unsplit run's: the default margin (:func:`auto_margin`) is that long. The tail after ``end``
(:func:`tail_margin`) only has to cover the pairing of the frames just before ``end``.

:func:`assemble` then writes the final bag with :func:`~sgdfuse_ros.ros.bag_fuse.fuse_bag`
over the whole input, with a :class:`ReplayPipeline` in place of the networks: the bag is paired
once more exactly as an unsplit run pairs it, every pair gets the frame its range fused, and the
output (original topics, log times, headers, summary) is written as ``bag fuse`` writes it. A
pair that no range fused, a range frame no pair asked for, or a range whose frames were not
numbered as the whole bag numbers them is counted (``missing`` / ``extra`` / ``misaligned``);
none happens when the margin is wide enough (see docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import time
from typing import Any, Iterator

import numpy as np

from sgdfuse_ros.fusion.pipeline import FusionPipeline, FusionResult, PipelineConfig
from sgdfuse_ros.ros.bag_fuse import FuseSummary, fuse_bag
from sgdfuse_ros.ros.bag_io import (BagError, bag_info, copy_connection, discard_output,
                                    open_writer, read_messages, stamp_ns)
from . import schedule
from .schedule import RangePipeline, pair_stamp

#: Shortest margin, seconds, whatever the rate.
MIN_MARGIN_S = 1.0
#: Frames kept waiting for their pair beyond this many seconds past the one asked for mean the
#: asked-for pair was fused by no range.
REPLAY_HORIZON_NS = 5_000_000_000


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


def auto_margin(rate_hz: float, *, slop: float, queue_size: int, smoothing: float,
                mask_rate: float) -> float:
    """Seconds of margin before a range for a bit-identical output: the pairing's settling
    (:func:`tail_margin`), then :func:`~.schedule.warmup_frames` at the bag's rate with masks
    refreshed at ``mask_rate`` and the refresh period lost lining the start up, bounded above
    without knowing the exact period: 37.9 s at 10 Hz with the defaults."""
    return (tail_margin(rate_hz, slop=slop, queue_size=queue_size)
            + schedule.warmup_s(rate_hz, smoothing=smoothing, mask_rate=mask_rate))


def tail_margin(rate_hz: float, *, slop: float, queue_size: int) -> float:
    """Seconds of margin after a range: a pair is emitted when its later frame arrives, so a
    few frames past the end (a full queue) and 4 x ``slop`` are enough. Also how long the
    pairing takes to settle at the start of a window (the queues have filled)."""
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
    dst = Path(dst)
    counts = {t: 0 for t in topics}
    with schedule.open_window(src, topics, start_ns, stop_ns) as (conns, messages):
        writer = open_writer(dst, 'mcap')
        try:
            made: dict[tuple[str, str], Any] = {}
            out = {}
            for c in conns:
                key = (c.topic, c.msgtype)
                if key not in made:
                    made[key] = copy_connection(writer, c)
                if made[key] is None:
                    raise BagError(f'{src}: no message definition of {c.msgtype} ({c.topic})')
                out[c.id] = made[key]
            for conn, log_ns, raw in messages:
                writer.write(out[conn.id], log_ns, raw)
                counts[conn.topic] += 1
            writer.close()
            writer = None
        except BagError:
            discard_output(writer, dst)
            raise
        except Exception as exc:  # noqa: BLE001 - writing: disk full, permissions...
            discard_output(writer, dst)
            raise BagError(f'{src}: cannot copy the range into {dst} ({type(exc).__name__}: '
                           f'{exc})') from exc
    return counts


def _settle_s(rate: float | None, kwargs: dict[str, Any]) -> float:
    """Seconds the pairing takes to settle at the start of a window (:func:`tail_margin`)."""
    return tail_margin(rate or 0.0, slop=kwargs['slop'], queue_size=kwargs['queue_size'])


def count_pairs(src: str | os.PathLike, rng: TimeRange, *, kwargs: dict[str, Any]) -> int:
    """The whole bag's pairs in range ``rng`` (:func:`~.schedule.count_range_pairs`, paired
    from as far before the range as a window needs to settle)."""
    rate = schedule.camera_rate(src, kwargs['rgb_topic'])
    return schedule.count_range_pairs(src, rng, kwargs=kwargs,
                                      settle_s=_settle_s(rate, kwargs))


def _schedule_start(src: Path, sub: Path, rng: TimeRange, *, pipeline: RangePipeline,
                    kwargs: dict[str, Any], first_index: int | None) -> dict[str, Any]:
    """Where the window ``sub`` of range ``rng`` starts fusing (:mod:`.schedule`): the RGB
    stamps of the pairs it skips, the whole bag's index of its first fused frame (``base``),
    and the refresh period of the window and of the whole bag."""
    rgb = kwargs['rgb_topic']
    rate = schedule.camera_rate(src, rgb)
    whole = schedule.refresh_interval(pipeline, rate=rate, kwargs=kwargs)
    plan = {'skip': [], 'base': None, 'interval': whole, 'interval_ok': True}
    if whole is None:  # no masks: nothing to line up
        return plan
    window = schedule.refresh_interval(pipeline, rate=schedule.camera_rate(sub, rgb),
                                       kwargs=kwargs)
    plan['interval_ok'] = window == whole
    if rng.start_ns is None or rng.window_start_ns <= bag_info(src)['start_ns']:
        plan['base'] = 0  # the window starts with the bag: its frames are numbered as the bag's
        return plan
    if first_index is None:
        return plan
    stamps = schedule.pair_stamps(sub, kwargs)
    j, base = schedule.aligned_start(
        stamps, range_start_ns=rng.start_ns, first_index=first_index, interval=window,
        settled_ns=rng.window_start_ns + int(_settle_s(rate, kwargs) * 1e9))
    if j is not None:
        plan['skip'], plan['base'] = stamps[:j], base
    return plan


def fuse_range(src: str | os.PathLike, work: str | os.PathLike, rng: TimeRange, *,
               pipeline: RangePipeline, kwargs: dict[str, Any],
               first_index: int | None = None) -> dict[str, Any]:
    """Fuse range ``rng`` of bag ``src`` in the folder ``work`` (see the module docstring).

    ``kwargs`` are :func:`~sgdfuse_ros.ros.bag_fuse.fuse_bag`'s (from
    :meth:`.FuseOptions.bag_kwargs`); ``first_index``: the whole bag's index of the range's
    first pair (the pair counts of the ranges before it; not needed by the first range).
    Returns a JSON-ready record: ``bag`` (the fused-only bag of the window, or None when the
    window holds no pair), ``kept`` (its frames inside the range), ``failures`` (pairs inside
    the range that could not be fused, ``[stamp, reason]``), ``error`` (why the window fused
    nothing), ``window_pairs`` and ``fuse_ms`` (work done, margins included), and the mask
    schedule: ``interval`` (refresh period, None without masks), ``base`` (the whole bag's
    index of the window's first fused frame, None when it could not be lined up),
    ``first_frame`` (the window's index of the range's first frame), ``interval_ok``.
    """
    src, work = Path(src), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    sub, fused = work / f'window-{rng.index:04d}', work / f'fused-{rng.index:04d}'
    for p in (sub, fused):
        shutil.rmtree(p, ignore_errors=True)
    rec: dict[str, Any] = {'index': rng.index, 'start_ns': rng.start_ns, 'end_ns': rng.end_ns,
                           'bag': None, 'kept': 0, 'failures': [], 'error': None,
                           'window_pairs': 0, 'fuse_ms': 0.0, 'interval': None, 'base': None,
                           'first_frame': None, 'interval_ok': True}
    topics = [kwargs['thermal_topic'], kwargs['rgb_topic']]
    t0 = time.perf_counter()
    counts = write_sub_bag(src, sub, topics, rng.window_start_ns, rng.window_end_ns)
    try:
        if min(counts.values()) == 0:
            rec['error'] = 'no thermal/RGB frames in the range'
            return rec
        plan = _schedule_start(src, sub, rng, pipeline=pipeline, kwargs=kwargs,
                               first_index=first_index)
        rec.update(interval=plan['interval'], base=plan['base'],
                   interval_ok=plan['interval_ok'])
        part_kwargs = dict(kwargs, only_fused=True, storage='mcap')
        try:
            with pipeline.refusing(plan['skip']):
                summary = fuse_bag(sub, fused, pipeline=pipeline, progress=False,
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
    frame = 0
    for _, _, msg in read_messages(fused, kwargs['fused_topic']):
        if rng.holds(stamp_ns(msg)):
            rec['kept'] += 1
            if rec['first_frame'] is None:
                rec['first_frame'] = frame
        frame += 1
    rec['elapsed_s'] = time.perf_counter() - t0
    return rec


def _fused_frames(path: str | os.PathLike, topic: str, rng: TimeRange
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """``(stamp, image)`` of the fused frames of a range's bag that lie inside the range."""
    for _, _, msg in read_messages(path, topic):
        stamp = stamp_ns(msg)
        if not rng.holds(stamp):
            continue
        channels = 3 if msg.encoding == 'rgb8' else 1
        img = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, channels)
        yield stamp, (img if channels == 3 else img[:, :, 0])


class ReplayPipeline(FusionPipeline):
    """The pipeline of :func:`assemble`: ``fuse`` returns the frame that a range fused for
    the pair (found by the pair's RGB stamp), or raises the range's error for a pair that
    failed there. It is built on the ``mean`` baseline (no weights, no masks), which it never
    runs; it reports the ranges' method.

    It also numbers the frames as the whole bag's stream does (the frames it returned before),
    and checks that each range's first frame has the number its range's schedule assumed
    (``misaligned``: the ranges where it had not, or whose schedule could not be lined up).

    Frames are streamed from the ranges' bags in order, with a small look-ahead buffer (pairs
    come in nearly stamp order), so memory stays flat however long the bag.
    """

    def __init__(self, ranges: list[TimeRange], records: list[dict[str, Any]], *,
                 fused_topic: str, method: str):
        super().__init__(PipelineConfig(method='mean'))
        self._method = method
        self._failures = {int(s): why for r in records for s, why in r['failures']}
        self._errors = [r['error'] for r in records if r.get('error')]
        self._records = {r['index']: r for r in records}
        self._frames = self._stream(ranges, self._records, fused_topic)
        self._buffer: dict[int, tuple[np.ndarray, int]] = {}
        self._newest: int | None = None
        self._dropped = 0
        self._returned = 0
        self._seen: set[int] = set()
        self.missing = 0
        self.misaligned = 0

    @staticmethod
    def _stream(ranges, records, topic) -> Iterator[tuple[int, np.ndarray, int]]:
        for rng in ranges:
            rec = records.get(rng.index)
            if rec is not None and rec.get('bag'):
                for stamp, image in _fused_frames(rec['bag'], topic, rng):
                    yield stamp, image, rng.index

    @property
    def method_name(self) -> str:
        return self._method

    def fuse(self, thermal, visible, *, name: str = 'frame', masks=None) -> FusionResult:
        stamp = pair_stamp(name)
        if stamp in self._failures:
            raise ValueError(self._failures.pop(stamp))
        while stamp not in self._buffer:
            if self._newest is not None and self._newest > stamp + REPLAY_HORIZON_NS:
                break
            nxt = next(self._frames, None)
            if nxt is None:
                break
            self._buffer[nxt[0]] = nxt[1:]
            self._newest = nxt[0] if self._newest is None else max(self._newest, nxt[0])
        found = self._buffer.pop(stamp, None)
        stale = [s for s in self._buffer if s < stamp - REPLAY_HORIZON_NS]
        for s in stale:  # never asked for, and no pair that old will come: extra frames
            del self._buffer[s]
        self._dropped += len(stale)
        if found is None:
            self.missing += 1
            why = f'; ranges that fused nothing: {"; ".join(self._errors)}' if self._errors \
                else ''
            raise ValueError(f'{name}: no time range fused this pair{why}')
        image, index = found
        if index not in self._seen:
            self._seen.add(index)
            self.misaligned += not _in_step(self._records[index], self._returned)
        self._returned += 1
        return FusionResult(image=image, luma=None, ir=None, method=self._method)

    def extra(self) -> int:
        """Range frames that no pair of the whole bag asked for (drains the stream)."""
        return self._dropped + len(self._buffer) + sum(1 for _ in self._frames)


def _in_step(rec: dict[str, Any], frame: int) -> bool:
    """Whether range ``rec``'s first frame, the whole bag's frame ``frame``, was fused on the
    whole bag's mask schedule (always, for a method without masks)."""
    interval = rec.get('interval')
    if not interval:
        return True
    base, first = rec.get('base'), rec.get('first_frame')
    return (bool(rec.get('interval_ok')) and base is not None and first is not None
            and base % interval == 0 and frame - first == base)


def assemble(src: str | os.PathLike, out: str | os.PathLike, ranges: list[TimeRange],
             records: list[dict[str, Any]], *, kwargs: dict[str, Any], method: str
             ) -> tuple[FuseSummary, dict[str, int]]:
    """Write the final bag ``out`` of ``src`` from the ranges' fused frames (see the module
    docstring). Returns the summary of the whole bag and ``{'missing', 'extra',
    'misaligned'}``: pairs that no range fused (they are also in the summary's failures),
    range frames left over, and ranges whose mask refreshes did not fall on the whole bag's
    (their frames may differ a little from an unsplit run's)."""
    replay = ReplayPipeline(ranges, records, fused_topic=kwargs['fused_topic'], method=method)
    summary = fuse_bag(src, out, pipeline=replay, progress=False, **kwargs)
    return summary, {'missing': replay.missing, 'extra': replay.extra(),
                     'misaligned': replay.misaligned}


def fuse_in_ranges(src: str | os.PathLike, out: str | os.PathLike, work: str | os.PathLike,
                   ranges: list[TimeRange], *, pipeline: RangePipeline, kwargs: dict[str, Any]
                   ) -> tuple[FuseSummary, dict[str, int], list[dict[str, Any]]]:
    """What the workers of a fleet run do for a split bag, one step after the other in this
    process: count each range's pairs, fuse each range with a fresh gain, assemble. Returns
    :func:`assemble`'s summary and check, and the ranges' records."""
    counts = [count_pairs(src, r, kwargs=kwargs) for r in ranges[:-1]]
    records = []
    for k, rng in enumerate(ranges):
        pipeline.gain.reset()
        records.append(fuse_range(src, work, rng, pipeline=pipeline, kwargs=kwargs,
                                  first_index=sum(counts[:k])))
    summary, check = assemble(src, out, ranges, records, kwargs=kwargs,
                              method=pipeline.method_name)
    return summary, check, records

"""A time range's frames numbered as the whole bag numbers them, so its masks refresh on the
same frames.

Fusing a bag (:func:`~sgdfuse_ros.ros.bag_fuse.fuse_bag`) carries two kinds of state from
frame to frame: the thermal gain's moving average, and the masks of methods that use them
(:class:`~sgdfuse_ros.fusion.stream.FusionStream`). The gain forgets where it started; the
masks do not: they are refreshed every ``N`` frames *counted from the first frame fused*
(:func:`refresh_interval`), each refresh carried with the scene and blended in over a few
frames. A range fused on its own from an arbitrary frame refreshes its masks on other frames
than the whole bag does, and every frame after that differs a little (tens of grey levels at a
few pixels), however long the margin.

So a range starts fusing on a frame that the whole bag refreshes on:

1. :func:`count_range_pairs` pairs each range's stamps (no pixels decoded: cheap next to
   fusion) and counts its pairs; the driver adds the counts of the ranges before range ``k``:
   the index, in the whole bag, of range ``k``'s first pair;
2. :func:`aligned_start` pairs the range's window (the same rule, the same messages), numbers
   its pairs from that index backwards into the margin, and picks the first pair numbered a
   multiple of ``N`` once the pairing has settled;
3. a :class:`RangePipeline` refuses the window's pairs before that one, so the window's stream
   counts its frames from there, in step with the whole bag's.

A pair the whole bag fails to fuse (a frame that cannot be converted) is not counted by the
whole bag but is by step 1; :func:`~.ranges.assemble` therefore checks every range against
the whole bag's numbering and reports a range whose schedule did not line up (``misaligned``).
"""

from __future__ import annotations

from contextlib import contextmanager
import math
import os
import re
from typing import Any, Iterator

from sgdfuse_ros.core.matching import ApproximateMatcher
from sgdfuse_ros.fusion.pipeline import FusionPipeline, FusionResult
from sgdfuse_ros.fusion.stream import FusionStream
from sgdfuse_ros.masks.motion import MaskCarrier
from sgdfuse_ros.ros.bag_io import BagError, BagReader, stamp_ns, typestore

#: The thermal gain's moving average has forgotten its first frame completely once what is left
#: of it (smoothing ** n) is below float64 resolution.
GAIN_TOLERANCE = 2.0 ** -53
#: ``name`` of a pair as :func:`~sgdfuse_ros.ros.bag_fuse.fuse_bag` hands it to the pipeline.
PAIR_NAME = re.compile(r'@ (\d+)\.(\d{9})$')


def pair_stamp(name: str) -> int:
    """The RGB stamp (ns) of a pair from the name ``fuse_bag`` gives it (``pair @ s.ns``)."""
    m = PAIR_NAME.search(name)
    if m is None:
        raise RuntimeError(f'{name}: cannot tell the pair stamp from its name')
    return int(m.group(1)) * 1_000_000_000 + int(m.group(2))


@contextmanager
def open_window(src: str | os.PathLike, topics: list[str], start_ns: int | None = None,
                stop_ns: int | None = None) -> Iterator[tuple[list, Iterator]]:
    """``(connections, messages)`` of ``topics`` in bag ``src``: the messages ``(connection,
    log time ns, raw CDR)`` logged in ``[start_ns, stop_ns)`` (None: open), in log order.
    Failures to open or read are :class:`BagError`."""
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(src)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - any unreadable bag
        raise BagError(f'{src}: cannot open the bag ({type(exc).__name__}: {exc})') from exc
    try:
        conns = [c for c in reader.connections if c.topic in topics]

        def messages():
            it = reader.messages(connections=conns, start=start_ns, stop=stop_ns)
            while True:
                try:
                    item = next(it)
                except StopIteration:
                    return
                except Exception as exc:  # noqa: BLE001 - any read error
                    raise BagError(f'{src}: the bag is corrupt or truncated, reading stopped '
                                   f'({type(exc).__name__}: {exc})') from exc
                yield item
        yield conns, messages()
    finally:
        reader.close()


def pair_stamps(src: str | os.PathLike, kwargs: dict[str, Any], start_ns: int | None = None,
                stop_ns: int | None = None) -> list[int]:
    """RGB stamps of the pairs that ``fuse_bag`` (``kwargs``: its topics, slop and queue)
    makes of the messages logged in ``[start_ns, stop_ns)``, in the order it makes them. Only
    the headers are used; a message that cannot be decoded is skipped, as ``fuse_bag`` skips
    it."""
    thermal, rgb = kwargs['thermal_topic'], kwargs['rgb_topic']
    index = {thermal: 0, rgb: 1}
    matcher = ApproximateMatcher(queue_size=kwargs['queue_size'], slop=kwargs['slop'])
    ts = typestore()
    out: list[int] = []
    with open_window(src, [thermal, rgb], start_ns, stop_ns) as (_, messages):
        for conn, _, raw in messages:
            try:
                stamp = stamp_ns(ts.deserialize_cdr(raw, conn.msgtype))
            except Exception:  # noqa: BLE001 - an undecodable record, as fuse_bag
                continue
            pair = matcher.push(index[conn.topic], stamp, stamp)
            if pair is not None:
                out.append(pair[1])
    return out


def camera_rate(path: str | os.PathLike, rgb_topic: str) -> float | None:
    """The RGB camera's rate as ``fuse_bag`` estimates it (from the bag's metadata)."""
    with BagReader(path) as reader:
        return reader.rate(rgb_topic)


def refresh_interval(pipeline: FusionPipeline, *, rate: float | None, kwargs: dict[str, Any]
                     ) -> int | None:
    """Frames between mask refreshes of ``fuse_bag`` on a bag with RGB rate ``rate`` (None:
    the method uses no masks, so there is no schedule to line up)."""
    mask_rate = kwargs['mask_rate']
    stream = FusionStream(pipeline, mask_rate=mask_rate, mask_max_age=kwargs['mask_max_age'],
                          camera_rate=rate or mask_rate, live=False)
    try:
        return stream.mask_stats().get('refresh_every')
    finally:
        stream.close()


def warmup_frames(smoothing: float, interval: int | None = None) -> int:
    """Frames a range must fuse before its output is the whole bag's, bit for bit.

    The thermal gain (a moving average with ``smoothing``) no longer depends on where it
    started after ``ceil(log(2**-53) / log(smoothing))`` frames (349 for the default 0.9): a
    nearly forgotten start is not enough, methods that select per pixel turn a 1e-4 difference
    of gain into a jump of tens of levels at a few pixels. With masks refreshed every
    ``interval`` frames (on the gained thermal frame) add the first refresh after that, the
    ``interval`` frames it takes to arrive and the carrier's blend: 357 frames at 10 Hz with
    2 Hz masks."""
    gain = 0 if smoothing <= 0 else math.ceil(math.log(GAIN_TOLERANCE) / math.log(smoothing))
    if not interval:
        return gain
    blend = MaskCarrier().blend_frames
    return math.ceil(gain / interval) * interval + interval + blend - 1


def warmup_s(rate_hz: float, *, smoothing: float, mask_rate: float) -> float:
    """Seconds that hold :func:`warmup_frames` and the up to ``N - 1`` frames skipped to start
    on a refresh, for the period ``N`` a stream derives from ``rate_hz`` and ``mask_rate``
    whatever its rounding: the gain's frames and the blend, plus three refresh periods."""
    if rate_hz <= 0:
        return 0.0
    blend = MaskCarrier().blend_frames
    return (warmup_frames(smoothing) + blend) / rate_hz + 3.0 / mask_rate


def count_range_pairs(src: str | os.PathLike, rng, *, kwargs: dict[str, Any], settle_s: float
                      ) -> int:
    """Pairs of the whole bag whose RGB stamp lies in range ``rng`` (a
    :class:`~.ranges.TimeRange`): its messages are paired from ``settle_s`` seconds before its
    start (enough for the pairing to settle) to the end of its window."""
    start = None if rng.start_ns is None else max(rng.window_start_ns,
                                                  rng.start_ns - int(settle_s * 1e9))
    return sum(1 for s in pair_stamps(src, kwargs, start, rng.window_end_ns) if rng.holds(s))


def aligned_start(stamps: list[int], *, range_start_ns: int, first_index: int, interval: int,
                  settled_ns: int) -> tuple[int | None, int | None]:
    """Where a window should start fusing: ``(j, index)``, the position in ``stamps`` (the
    window's pairs, :func:`pair_stamps`) of the first pair to fuse and its index in the whole
    bag, a multiple of ``interval``; ``(None, None)`` when the window has no such pair before
    the range.

    The window's first pair inside the range (``stamp >= range_start_ns``) has index
    ``first_index``, and the pairs before it count down from there. The first aligned pair
    stamped at or after ``settled_ns`` is taken (the pairing has settled by then, so the
    numbering holds), else, for a margin too short to settle, the last aligned one before the
    range."""
    if not stamps:
        return None, None
    first = next((j for j, s in enumerate(stamps) if s >= range_start_ns), len(stamps))
    aligned = [j for j in range(min(first, len(stamps) - 1) + 1)
               if first_index + j - first >= 0 and (first_index + j - first) % interval == 0]
    if not aligned:
        return None, None
    settled = [j for j in aligned if stamps[j] >= settled_ns]
    j = settled[0] if settled else aligned[-1]
    return j, first_index + j - first


class RangePipeline(FusionPipeline):
    """The pipeline of a fleet worker: a :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline`
    that counts the pairs it fused (``count``, read by the worker's progress calls from another
    thread) and, inside :meth:`refusing`, refuses the pairs whose RGB stamps it is given (the
    warm-up a window skips to start on a refresh frame; ``fuse_bag`` lists them as failures,
    which lie before the range)."""

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self.count = 0
        self._refused: frozenset[int] = frozenset()

    @contextmanager
    def refusing(self, stamps) -> Iterator[None]:
        self._refused = frozenset(stamps)
        try:
            yield
        finally:
            self._refused = frozenset()

    def fuse(self, thermal, visible, *, masks=None, name: str = 'frame') -> FusionResult:
        if self._refused and pair_stamp(name) in self._refused:
            raise ValueError(f'{name}: before the start of the range (warm-up skipped to line '
                             'up the mask refreshes)')
        result = super().fuse(thermal, visible, masks=masks, name=name)
        self.count += 1
        return result


__all__ = ['GAIN_TOLERANCE', 'RangePipeline', 'aligned_start', 'camera_rate',
           'count_range_pairs', 'open_window', 'pair_stamp', 'pair_stamps', 'refresh_interval',
           'warmup_frames', 'warmup_s']

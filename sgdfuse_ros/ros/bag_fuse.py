"""Offline fusion of a rosbag2 bag: every thermal/RGB pair fused into a new bag, no ROS needed.

Frames are paired with :class:`~sgdfuse_ros.core.matching.ApproximateMatcher`, the rule the live
node runs, fed in the bag's recorded (arrival) order with the header stamps, so a bag is paired
exactly as ``sgdfuse_node`` would pair it live. Unlike the node (which drops stale pairs when
the model is slower than the cameras), every matched pair is fused: each one ends up in the
output bag or in :attr:`FuseSummary.failures`. Topic and synchronization defaults are the
node's (:mod:`sgdfuse_ros.params`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import time
from typing import Any

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.imaging import ImageError
from sgdfuse_ros.core.matching import DROP_REASONS, ApproximateMatcher
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig
from sgdfuse_ros.fusion.stream import FusionStream
from sgdfuse_ros.fusion.temporal import TemporalSettings
from sgdfuse_ros.params import DEFAULTS
from . import convert
from .bag_io import (COMPRESSED, IMAGE, IMAGE_TYPES, BagError, BagReader, copy_connection,
                     discard_output, image_message, open_writer, progress_bar, stamp_ns,
                     typestore)
from .outputs import jpeg_bytes

#: Frames dropped because their message could not be decoded (a corrupt record).
UNDECODABLE = 'undecodable'


@dataclass
class FuseSummary:
    """What :func:`fuse_bag` did. ``unmatched[topic][reason]`` counts the frames left without a
    partner (reasons: :data:`.sync.DROP_REASONS` plus ``undecodable``); ``failures`` lists the
    matched pairs that could not be fused, as ``(RGB stamp ns, reason)``."""

    input: str
    output: str
    storage: str
    method: str
    thermal_topic: str
    rgb_topic: str
    fused_topic: str
    slop: float
    queue_size: int
    received: dict[str, int] = field(default_factory=dict)
    pairs_matched: int = 0
    pairs_fused: int = 0
    unmatched: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[tuple[int, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    copied: dict[str, int] = field(default_factory=dict)
    not_copied: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    fuse_ms: list[float] = field(default_factory=list)
    #: The stream's mask figures (``FusionStream.mask_stats()``; empty without masks).
    masks: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every matched pair fused and every frame decoded."""
        return (self.pairs_fused > 0 and not self.failures
                and not any(c.get(UNDECODABLE) for c in self.unmatched.values()))

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_fused / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in (
            'input', 'output', 'storage', 'method', 'thermal_topic', 'rgb_topic', 'fused_topic',
            'slop', 'queue_size', 'received', 'pairs_matched', 'pairs_fused', 'unmatched',
            'problems', 'copied', 'not_copied', 'elapsed_s', 'masks')}
        d['failures'] = [list(f) for f in self.failures]
        d['pairs_per_second'] = self.pairs_per_second
        d['fuse_ms_mean'] = float(np.mean(self.fuse_ms)) if self.fuse_ms else None
        d['ok'] = self.ok
        return d

    def format(self) -> str:
        lines = [f'fused {self.pairs_fused} of {self.pairs_matched} matched pair(s) with '
                 f'{self.method} -> {self.output} ({self.storage}, {self.fused_topic}) in '
                 f'{self.elapsed_s:.1f} s ({self.pairs_per_second:.1f} pairs/s'
                 + (f', fusion {np.mean(self.fuse_ms):.1f} ms/pair' if self.fuse_ms else '')
                 + ')',
                 f'pairing: approximate time, slop {self.slop:g} s, queue {self.queue_size} '
                 "(the node's rule)"]
        if self.masks:
            lines.append(f'masks: {self.masks["refreshes"]} refresh(es) by '
                         f'{self.masks["provider"]}, every {self.masks["refresh_every"]} '
                         f'frame(s) ({self.masks["rate_hz"]:g} Hz, as the node)')
        for topic in (self.thermal_topic, self.rgb_topic):
            n = self.received.get(topic, 0)
            drops = {r: c for r, c in self.unmatched.get(topic, {}).items() if c}
            text = f'  {topic}: {n} frame(s), {sum(drops.values())} left unmatched'
            if drops:
                text += ' (' + ', '.join(f'{c} {r}' for r, c in drops.items()) + ')'
            lines.append(text)
        if self.copied:
            lines.append(f'copied {sum(self.copied.values())} message(s) of '
                         f'{len(self.copied)} original topic(s)')
        for t in self.not_copied:
            lines.append(f'not copied: {t}')
        for p in self.problems:
            lines.append(f'problem: {p}')
        if self.failures:
            lines.append(f'{len(self.failures)} matched pair(s) NOT fused:')
            for stamp, why in self.failures[:20]:
                lines.append(f'  pair @ {stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d}: '
                             f'{why}')
            if len(self.failures) > 20:
                lines.append(f'  ... and {len(self.failures) - 20} more')
        return '\n'.join(lines)


def _build_pipeline(pipeline) -> FusionPipeline:
    if pipeline is None:
        return FusionPipeline(PipelineConfig())
    if isinstance(pipeline, str):
        return FusionPipeline(PipelineConfig(method=pipeline))
    if isinstance(pipeline, PipelineConfig):
        return FusionPipeline(pipeline)
    return pipeline


def _check_image_topic(topics: dict[str, tuple[str, int]], topic: str, role: str,
                       path: Path) -> str:
    if topic not in topics:
        images = sorted(t for t, (k, _) in topics.items() if k in IMAGE_TYPES)
        raise BagError(f'{path}: no {role} topic {topic!r} in the bag (image topics: '
                       f'{", ".join(images) if images else "none"})')
    kind, _ = topics[topic]
    if kind not in IMAGE_TYPES:
        raise BagError(f'{path}: {role} topic {topic!r} has type {kind}; expected '
                       f'{IMAGE} or {COMPRESSED}')
    return kind


def fuse_bag(in_path: str | os.PathLike, out_path: str | os.PathLike, *,
             thermal_topic: str = DEFAULTS['thermal_topic'],
             rgb_topic: str = DEFAULTS['rgb_topic'], fused_topic: str = DEFAULTS['fused_topic'],
             slop: float = DEFAULTS['sync_slop'], queue_size: int = DEFAULTS['sync_queue_size'],
             only_fused: bool = False, pipeline=None,
             storage: str | None = None, output_encoding: str | None = None,
             mask_rate: float = DEFAULTS['mask_rate'], mask_max_age: float | None = None,
             thermal_nonfinite: str = DEFAULTS['thermal_nonfinite'],
             temporal_strength: float = DEFAULTS['temporal_strength'],
             compressed_quality: int | None = None,
             progress: bool = True) -> FuseSummary:
    """Fuse every thermal/RGB pair of a bag into a new bag.

    ``pipeline`` is a :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline`, a
    :class:`~sgdfuse_ros.fusion.pipeline.PipelineConfig`, a method name, or None (the default
    pipeline, method ``auto``). It runs in a :class:`~sgdfuse_ros.fusion.stream.FusionStream`
    replaying the node's behaviour offline: for methods that use masks, they are refreshed at
    ``mask_rate`` Hz of the RGB camera's rate (estimated from the bag) and used with the
    node's delay, deterministically (``mask_max_age``: when they count as stale; None: three
    refresh periods, at least 1 s). The fused frames (``sensor_msgs/msg/Image``, ``rgb8``, or
    ``mono8`` when the pipeline outputs mono or the RGB frame is gray; ``output_encoding``
    forces one) carry the RGB frame's header and are logged at the arrival time of the pair's
    later frame, when the node could have fused it. The original topics are copied unless
    ``only_fused``. ``thermal_nonfinite``: the node's policy for NaN or infinite pixels of
    float thermal frames (``replace`` or ``reject``, see :func:`.convert.thermal_frame`).
    ``temporal_strength``: the node's temporal filter (0: off; see
    :mod:`sgdfuse_ros.fusion.temporal`).
    ``compressed_quality``: also write each fused frame as a JPEG ``sensor_msgs/CompressedImage``
    of that quality (1-100) on ``<fused_topic>/compressed``, as the node's
    ``publish_compressed`` does.

    Raises :class:`BagError` (and leaves no output) when the input cannot be read, lacks a
    topic, has a topic of the wrong type, or no pair was fused. Pairs that fail individually
    are listed in the returned summary's ``failures`` and the rest of the bag is still fused.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if thermal_topic == rgb_topic:
        raise BagError('the thermal and RGB topics must differ')
    if fused_topic in (thermal_topic, rgb_topic):
        raise BagError(f'the fused topic {fused_topic!r} must differ from the input topics')
    if thermal_nonfinite not in convert.NONFINITE_POLICIES:
        raise BagError(f'thermal_nonfinite must be one of '
                       f'{", ".join(convert.NONFINITE_POLICIES)}, got {thermal_nonfinite!r}')
    if output_encoding not in (None, 'rgb8', 'mono8'):
        raise BagError(f'output encoding must be rgb8 or mono8, got {output_encoding!r}')
    if compressed_quality is not None and not 1 <= compressed_quality <= 100:
        raise BagError(f'JPEG quality must be in [1, 100], got {compressed_quality}')
    matcher_args = dict(queue_size=queue_size, slop=slop)
    ApproximateMatcher(**matcher_args)  # validates slop / queue_size before any work
    if out_path.exists():
        raise BagError(f'{out_path}: already exists; choose a new output path')
    try:
        if out_path.resolve().is_relative_to(in_path.resolve()):
            raise BagError(f'{out_path}: the output must not be inside the input bag')
    except OSError:
        pass

    ts = typestore()
    reader = BagReader(in_path)
    writer = stream = None
    try:
        topics = reader.topics()
        _check_image_topic(topics, thermal_topic, 'thermal', in_path)
        _check_image_topic(topics, rgb_topic, 'RGB', in_path)
        if not only_fused and fused_topic in topics:
            raise BagError(f'{in_path}: the bag already has a {fused_topic!r} topic; choose '
                           'another --fused-topic or --only-fused')
        pipe = _build_pipeline(pipeline)
        temporal = (TemporalSettings(strength=temporal_strength) if temporal_strength > 0
                    else False)
        stream = FusionStream(pipe, mask_rate=mask_rate, mask_max_age=mask_max_age,
                              camera_rate=reader.rate(rgb_topic) or mask_rate, live=False,
                              temporal=temporal)
        out_storage = storage or reader.storage
        summary = FuseSummary(
            input=str(in_path), output=str(out_path), storage=out_storage,
            method=pipe.method_name, thermal_topic=thermal_topic, rgb_topic=rgb_topic,
            fused_topic=fused_topic, slop=float(slop), queue_size=int(queue_size),
            received={thermal_topic: 0, rgb_topic: 0},
            unmatched={t: {r: 0 for r in (*DROP_REASONS, UNDECODABLE)}
                       for t in (thermal_topic, rgb_topic)})
        writer = open_writer(out_path, out_storage)
        rgb_conn = next(c for c in reader.connections if c.topic == rgb_topic)
        fused_qos = list(getattr(rgb_conn.ext, 'offered_qos_profiles', []) or [])
        fused_conn = writer.add_connection(fused_topic, IMAGE, typestore=ts,
                                           offered_qos_profiles=fused_qos)
        jpeg_conn = None if compressed_quality is None else writer.add_connection(
            f'{fused_topic}/compressed', COMPRESSED, typestore=ts,
            offered_qos_profiles=fused_qos)
        out_conns: dict[int, Any] = {}
        if not only_fused:
            made_for: dict[tuple[str, str], Any] = {}
            for conn in reader.connections:
                key = (conn.topic, conn.msgtype)
                if key not in made_for:  # one output connection per topic and type
                    made_for[key] = copy_connection(writer, conn)
                made = made_for[key]
                if made is None:
                    summary.not_copied.append(f'{conn.topic} ({conn.msgtype}: no message '
                                              'definition in the bag or the typestore)')
                    continue
                out_conns[conn.id] = made
                summary.copied.setdefault(conn.topic, 0)

        index = {thermal_topic: 0, rgb_topic: 1}
        names = (thermal_topic, rgb_topic)

        def on_drop(i: int, item, reason: str) -> None:
            summary.unmatched[names[i]][reason] += 1

        matcher = ApproximateMatcher(**matcher_args, on_drop=on_drop)
        conns = reader.connections if not only_fused else [
            c for c in reader.connections if c.topic in index]
        expected = {c.id: int(c.msgcount or 0) for c in conns}
        seen = {c.id: 0 for c in conns}
        total = sum(int(c.msgcount or 0) for c in conns if c.topic in index) or None
        bar = progress_bar(total, f'fuse ({pipe.method_name})', progress)
        t_start = time.perf_counter()
        try:
            for conn, log_ns, raw in reader.messages(conns):
                seen[conn.id] += 1
                if conn.id in out_conns:
                    writer.write(out_conns[conn.id], log_ns, raw)
                    summary.copied[conn.topic] += 1
                i = index.get(conn.topic)
                if i is None:
                    continue
                summary.received[conn.topic] += 1
                if bar is not None:
                    bar.update(1)
                try:
                    msg = ts.deserialize_cdr(raw, conn.msgtype)
                    stamp = stamp_ns(msg)
                except Exception as exc:  # noqa: BLE001 - one corrupt record
                    summary.unmatched[conn.topic][UNDECODABLE] += 1
                    summary.problems.append(f'{conn.topic} message logged at {log_ns}: cannot '
                                            f'decode ({type(exc).__name__}: {exc})')
                    continue
                pair = matcher.push(i, msg, stamp)
                if pair is None:
                    continue
                summary.pairs_matched += 1
                thermal_msg, rgb_msg = pair
                image, why, fuse_ms = _fuse_pair(stream, thermal_msg, rgb_msg,
                                                 nonfinite=thermal_nonfinite)
                if image is None:
                    summary.failures.append((stamp_ns(rgb_msg), why))
                else:
                    enc = output_encoding or ('rgb8' if image.ndim == 3 else 'mono8')
                    if enc == 'mono8' and image.ndim == 3:
                        image = imaging.to_uint8(imaging.rgb_to_gray(image))
                    elif enc == 'rgb8' and image.ndim == 2:
                        image = np.repeat(image[:, :, None], 3, axis=2)
                    out_msg = image_message(image, enc, rgb_msg.header)
                    writer.write(fused_conn, log_ns, ts.serialize_cdr(out_msg, IMAGE))
                    if jpeg_conn is not None:
                        data, fmt = jpeg_bytes(image, compressed_quality)
                        jpeg = ts.types[COMPRESSED](header=rgb_msg.header, format=fmt,
                                                    data=np.frombuffer(data, np.uint8))
                        writer.write(jpeg_conn, log_ns, ts.serialize_cdr(jpeg, COMPRESSED))
                    summary.pairs_fused += 1
                    summary.fuse_ms.append(fuse_ms)
                if bar is not None:
                    bar.set_postfix(fused=summary.pairs_fused, failed=len(summary.failures),
                                    refresh=False)
            matcher.flush()
        finally:
            if bar is not None:
                bar.close()
        summary.elapsed_s = time.perf_counter() - t_start
        summary.masks = stream.mask_stats()
        short = {c.topic: (seen[c.id], expected[c.id]) for c in conns
                 if expected[c.id] and seen[c.id] < expected[c.id]}
        if short:
            raise BagError(f'{in_path}: the bag is truncated: ' + '; '.join(
                f'{t}: read {a} of the {b} messages its metadata lists'
                for t, (a, b) in short.items()))
        if summary.pairs_fused == 0:
            why = (f'{summary.pairs_matched} matched pair(s), all failed: '
                   f'{summary.failures[0][1]}' if summary.failures else
                   f'no thermal/RGB pair matched within slop {slop:g} s '
                   f'({summary.received[thermal_topic]} thermal, {summary.received[rgb_topic]} '
                   'RGB frames); check the topics and --slop')
            raise BagError(f'{in_path}: nothing fused: {why}')
        try:
            writer.close()
        except Exception as exc:  # noqa: BLE001
            raise BagError(f'{out_path}: cannot finish the bag ({type(exc).__name__}: '
                           f'{exc})') from exc
        writer = None
        return summary
    except (BagError, KeyboardInterrupt, ImportError, ValueError, TypeError,
            FileNotFoundError):  # (the last four: building the pipeline)
        discard_output(writer, out_path)
        raise
    except Exception as exc:  # writing: disk full, permissions, rosbags WriterError...
        discard_output(writer, out_path)
        raise BagError(f'{out_path}: cannot write the bag ({type(exc).__name__}: {exc})') from exc
    except BaseException:
        discard_output(writer, out_path)
        raise
    finally:
        if stream is not None:
            stream.close()
        reader.close()


def _fuse_pair(stream: FusionStream, thermal_msg, rgb_msg, *, nonfinite: str
               ) -> tuple[np.ndarray | None, str, float]:
    stamp = stamp_ns(rgb_msg)
    name = f'pair @ {stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d}'
    try:
        thermal = convert.thermal_from_msg(thermal_msg, nonfinite=nonfinite,
                                           use_cv_bridge=False)
        visible = convert.visible_from_msg(rgb_msg, use_cv_bridge=False)
        t0 = time.perf_counter()
        result = stream.push(thermal, visible, stamp=stamp / 1e9, name=name)
        return result.image, '', (time.perf_counter() - t0) * 1e3
    except (ImageError, ValueError) as exc:
        return None, str(exc), 0.0
    except Exception as exc:  # noqa: BLE001 - a model error must not lose the other pairs
        return None, f'{type(exc).__name__}: {exc}', 0.0


__all__ = ['UNDECODABLE', 'FuseSummary', 'fuse_bag']

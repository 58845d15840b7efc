"""rosbag2 tools: fuse a whole bag offline, build a sample bag, play and record with rclpy.

Reading and writing go through the pure-Python ``rosbags`` library and its own message types
(the ROS 2 Jazzy typestore), so :func:`fuse_bag`, :func:`make_sample_bag` and :func:`bag_info`
need no ROS installation. Only :func:`play_bag` / :class:`BagPlayer` and :func:`record_bag` /
:class:`BagRecorder` talk to a live ROS 2 graph and import rclpy (lazily).

Both rosbag2 storage formats are handled: ``mcap`` and ``sqlite3``. The input's format is read
from its ``metadata.yaml`` (or a bare ``.mcap`` / ``.db3`` file's suffix) and the output uses
the same one unless told otherwise. Bags are written with metadata version 8 (what ROS 2 Jazzy's
rosbag2 writes and reads).

Offline fusion pairs frames with :class:`~sgdfuse_ros.core.matching.ApproximateMatcher`, the rule
the live node runs, fed in the bag's recorded (arrival) order with the header stamps, so a bag is
paired exactly as ``sgdfuse_node`` would pair it live. Unlike the node (which drops stale pairs
when the model is slower than the cameras), every matched pair is fused: each one ends up in the
output bag or in :attr:`FuseSummary.failures`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import heapq
import importlib
import math
import os
from pathlib import Path
import shutil
import sys
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.imaging import ImageError
from sgdfuse_ros.core.matching import DROP_REASONS, ApproximateMatcher

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED)
STORAGES = ('mcap', 'sqlite3')
#: rosbag2 metadata version written (ROS 2 Jazzy writes 8; version 9 is Kilted's).
BAG_VERSION = 8
#: Node defaults (``config/sgdfuse.yaml``); the offline tool uses the same.
DEFAULT_THERMAL_TOPIC = '/thermal/image_raw'
DEFAULT_RGB_TOPIC = '/rgb/image_raw'
DEFAULT_FUSED_TOPIC = '/fused/image_raw'
DEFAULT_SLOP = 0.05
DEFAULT_QUEUE_SIZE = 10
#: Frames dropped because their message could not be decoded (a corrupt record).
UNDECODABLE = 'undecodable'


class BagError(RuntimeError):
    """A bag that cannot be used (missing, corrupt, truncated, wrong topics or types), or an
    output that cannot be written. Fatal: no output bag is left behind."""


# --------------------------------------------------------------------------------------------
# rosbags helpers (no ROS needed)
# --------------------------------------------------------------------------------------------

_TYPESTORE = None


def typestore():
    """The ROS 2 Jazzy typestore of ``rosbags`` (message classes and CDR serialization)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        try:
            from rosbags.typesys import Stores, get_typestore
        except ImportError as exc:  # pragma: no cover - rosbags is in the ros extra
            raise BagError('the rosbag tools need the rosbags package '
                           '(pip install "sgdfuse_ros[ros]")') from exc
        _TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
    return _TYPESTORE


def _storage_plugin(storage: str):
    from rosbags.rosbag2 import StoragePlugin

    if storage not in STORAGES:
        raise BagError(f'storage must be one of {", ".join(STORAGES)}, got {storage!r}')
    return StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3


def detect_storage(path: str | os.PathLike) -> str:
    """``mcap`` or ``sqlite3``: from a bag folder's ``metadata.yaml`` or a file's suffix."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'{path}: no such bag')
    if path.is_file():
        if path.suffix == '.mcap':
            return 'mcap'
        if path.suffix == '.db3':
            return 'sqlite3'
        raise BagError(f'{path}: not a rosbag2 bag (a folder with metadata.yaml, or a .mcap / '
                       '.db3 file)')
    meta = path / 'metadata.yaml'
    if not meta.is_file():
        raise BagError(f'{path}: not a rosbag2 bag: no metadata.yaml in the folder')
    import yaml

    try:
        info = yaml.safe_load(meta.read_text())['rosbag2_bagfile_information']
        storage = str(info['storage_identifier'])
    except Exception as exc:  # noqa: BLE001 - any damage to the metadata
        raise BagError(f'{meta}: unreadable bag metadata ({type(exc).__name__}: {exc})') from exc
    if storage not in STORAGES:
        raise BagError(f'{path}: storage {storage!r} is not supported (only '
                       f'{", ".join(STORAGES)})')
    return storage


class _BagReader:
    """``rosbags`` Reader with every failure turned into a :class:`BagError`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.storage = detect_storage(self.path)
        from rosbags.rosbag2 import Reader

        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # noqa: BLE001 - ReaderError, sqlite3/struct/OS errors...
            raise BagError(f'{self.path}: cannot open the bag, it is corrupt or truncated '
                           f'({type(exc).__name__}: {exc})') from exc

    @property
    def connections(self) -> list:
        return self._reader.connections

    def topics(self) -> dict[str, tuple[str, int]]:
        """topic -> (message type, message count in the metadata)."""
        out: dict[str, tuple[str, int]] = {}
        for c in self.connections:
            kind, count = out.get(c.topic, (c.msgtype, 0))
            if kind != c.msgtype:
                kind = f'{kind}|{c.msgtype}'
            out[c.topic] = (kind, count + int(c.msgcount or 0))
        return out

    def messages(self, connections=()) -> Iterator[tuple[Any, int, bytes]]:
        """``(connection, log time ns, raw CDR)`` in log-time order; read errors -> BagError."""
        it = self._reader.messages(connections=connections)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001
                raise BagError(f'{self.path}: the bag is corrupt or truncated, reading stopped '
                               f'({type(exc).__name__}: {exc})') from exc
            yield item

    def close(self) -> None:
        try:
            self._reader.close()
        except Exception:  # noqa: BLE001 - closing a broken file
            pass

    def __enter__(self) -> _BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bag_info(path: str | os.PathLike) -> dict[str, Any]:
    """Storage, duration, message count and ``{topic: (type, count)}`` of a bag."""
    with _BagReader(path) as reader:
        r = reader._reader
        count = r.message_count
        return {'path': str(path), 'storage': reader.storage, 'message_count': count,
                'start_ns': r.start_time if count else None,
                'duration_s': r.duration / 1e9 if count else 0.0,
                'topics': reader.topics()}


def read_messages(path: str | os.PathLike, topics: str | list[str] | None = None
                  ) -> Iterator[tuple[str, int, Any]]:
    """Deserialized messages of a bag: ``(topic, log time ns, message)`` in log-time order.

    Messages are ``rosbags`` dataclasses (same field names as the ROS messages).
    """
    if isinstance(topics, str):
        topics = [topics]
    ts = typestore()
    with _BagReader(path) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        if topics is not None:
            missing = sorted(set(topics) - {c.topic for c in conns})
            if missing:
                raise BagError(f'{path}: no topic {", ".join(missing)} in the bag')
        for conn, t, raw in reader.messages(conns):
            yield conn.topic, t, ts.deserialize_cdr(raw, conn.msgtype)


def stamp_ns(msg) -> int:
    """``header.stamp`` of a message in nanoseconds."""
    s = msg.header.stamp
    return int(s.sec) * 1_000_000_000 + int(s.nanosec)


def _header(stamp: int, frame_id: str):
    ts = typestore()
    Time = ts.types['builtin_interfaces/msg/Time']
    Header = ts.types['std_msgs/msg/Header']
    return Header(stamp=Time(sec=int(stamp // 1_000_000_000), nanosec=int(stamp % 1_000_000_000)),
                  frame_id=frame_id)


def image_message(img: np.ndarray, encoding: str, header):
    """A ``rosbags`` sensor_msgs/Image from an array laid out as ``encoding`` says.

    The offline twin of :func:`.convert.numpy_to_image` (which builds rclpy messages): same
    layout rules, little-endian, ``step`` = width * bytes per pixel.
    """
    from .convert import ENCODINGS

    if encoding not in ENCODINGS:
        raise ValueError(f'unsupported encoding {encoding!r}')
    dtype, channels = ENCODINGS[encoding]
    img = np.asarray(img)
    shape_ok = img.ndim == 2 if channels == 1 else (img.ndim == 3 and img.shape[2] == channels)
    if img.dtype != dtype or not shape_ok or img.size == 0:
        raise ValueError(f'cannot write a {img.dtype} array of shape {img.shape} as {encoding}')
    data = np.ascontiguousarray(img, dtype=dtype.newbyteorder('<'))
    h, w = data.shape[:2]
    return typestore().types[IMAGE](
        header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
        step=w * channels * dtype.itemsize, data=data.reshape(-1).view(np.uint8))


def _qos_sensor(reliability: str = 'best_effort', depth: int = 5):
    """A rosbags QoS profile (for a topic's ``offered_qos_profiles``)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.BEST_EFFORT if reliability == 'best_effort'
               else QosReliability.RELIABLE,
               QosDurability.VOLATILE, zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def _open_writer(out: Path, storage: str):
    from rosbags.rosbag2 import Writer

    if out.exists():
        raise BagError(f'{out}: already exists; choose a new output path')
    if not out.parent.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = Writer(out, version=BAG_VERSION, storage_plugin=_storage_plugin(storage))
        writer.open()
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise BagError(f'{out}: cannot create the bag ({type(exc).__name__}: {exc})') from exc
    return writer


def _discard_output(writer, out: Path) -> None:
    """Abort a writer and remove the partial bag it made."""
    if writer is not None:
        try:
            writer.abort()
        except Exception:  # noqa: BLE001
            pass
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)


def _copy_connection(writer, conn) -> Any | None:
    """Register an input connection in the writer (definition and QoS kept); None when the
    type's definition is unknown (neither in the bag nor in the typestore)."""
    ts = typestore()
    msgdef = getattr(conn.msgdef, 'data', '') or ''
    digest = conn.digest or ''
    qos = list(getattr(conn.ext, 'offered_qos_profiles', []) or [])
    if msgdef and digest:
        return writer.add_connection(conn.topic, conn.msgtype, msgdef=msgdef, rihs01=digest,
                                     offered_qos_profiles=qos)
    if conn.msgtype in ts.types:
        return writer.add_connection(conn.topic, conn.msgtype, typestore=ts,
                                     offered_qos_profiles=qos)
    return None


# --------------------------------------------------------------------------------------------
# Offline fusion
# --------------------------------------------------------------------------------------------

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
            'problems', 'copied', 'not_copied', 'elapsed_s')}
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


def _build_pipeline(pipeline):
    from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig

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
             thermal_topic: str = DEFAULT_THERMAL_TOPIC, rgb_topic: str = DEFAULT_RGB_TOPIC,
             fused_topic: str = DEFAULT_FUSED_TOPIC, slop: float = DEFAULT_SLOP,
             queue_size: int = DEFAULT_QUEUE_SIZE, only_fused: bool = False, pipeline=None,
             storage: str | None = None, output_encoding: str | None = None,
             progress: bool = True) -> FuseSummary:
    """Fuse every thermal/RGB pair of a bag into a new bag.

    ``pipeline`` is a :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline`, a
    :class:`~sgdfuse_ros.fusion.pipeline.PipelineConfig`, a method name, or None (the default
    pipeline, method ``auto``). The fused frames (``sensor_msgs/msg/Image``, ``rgb8``, or
    ``mono8`` when the pipeline outputs mono or the RGB frame is gray; ``output_encoding``
    forces one) carry the RGB frame's header and are logged at the arrival time of the pair's
    later frame, when the node could have fused it. The original topics are copied unless
    ``only_fused``.

    Raises :class:`BagError` (and leaves no output) when the input cannot be read, lacks a
    topic, has a topic of the wrong type, or no pair was fused. Pairs that fail individually
    are listed in the returned summary's ``failures`` and the rest of the bag is still fused.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if thermal_topic == rgb_topic:
        raise BagError('the thermal and RGB topics must differ')
    if fused_topic in (thermal_topic, rgb_topic):
        raise BagError(f'the fused topic {fused_topic!r} must differ from the input topics')
    if output_encoding not in (None, 'rgb8', 'mono8'):
        raise BagError(f'output encoding must be rgb8 or mono8, got {output_encoding!r}')
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
    reader = _BagReader(in_path)
    writer = None
    try:
        topics = reader.topics()
        _check_image_topic(topics, thermal_topic, 'thermal', in_path)
        _check_image_topic(topics, rgb_topic, 'RGB', in_path)
        if not only_fused and fused_topic in topics:
            raise BagError(f'{in_path}: the bag already has a {fused_topic!r} topic; choose '
                           'another --fused-topic or --only-fused')
        pipe = _build_pipeline(pipeline)
        out_storage = storage or reader.storage
        summary = FuseSummary(
            input=str(in_path), output=str(out_path), storage=out_storage,
            method=pipe.method_name, thermal_topic=thermal_topic, rgb_topic=rgb_topic,
            fused_topic=fused_topic, slop=float(slop), queue_size=int(queue_size),
            received={thermal_topic: 0, rgb_topic: 0},
            unmatched={t: {r: 0 for r in (*DROP_REASONS, UNDECODABLE)}
                       for t in (thermal_topic, rgb_topic)})
        writer = _open_writer(out_path, out_storage)
        rgb_conn = next(c for c in reader.connections if c.topic == rgb_topic)
        fused_conn = writer.add_connection(
            fused_topic, IMAGE, typestore=ts,
            offered_qos_profiles=list(getattr(rgb_conn.ext, 'offered_qos_profiles', []) or []))
        out_conns: dict[int, Any] = {}
        if not only_fused:
            made_for: dict[tuple[str, str], Any] = {}
            for conn in reader.connections:
                key = (conn.topic, conn.msgtype)
                if key not in made_for:  # one output connection per topic and type
                    made_for[key] = _copy_connection(writer, conn)
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
        bar = _progress_bar(total, f'fuse ({pipe.method_name})', progress)
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
                image, why, fuse_ms = _fuse_pair(pipe, thermal_msg, rgb_msg)
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
        _discard_output(writer, out_path)
        raise
    except Exception as exc:  # writing: disk full, permissions, rosbags WriterError...
        _discard_output(writer, out_path)
        raise BagError(f'{out_path}: cannot write the bag ({type(exc).__name__}: {exc})') from exc
    except BaseException:
        _discard_output(writer, out_path)
        raise
    finally:
        reader.close()


def _fuse_pair(pipe, thermal_msg, rgb_msg) -> tuple[np.ndarray | None, str, float]:
    from . import convert

    stamp = stamp_ns(rgb_msg)
    name = f'pair @ {stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d}'
    try:
        thermal = convert.thermal_from_msg(thermal_msg, use_cv_bridge=False)
        visible = convert.visible_from_msg(rgb_msg, use_cv_bridge=False)
        t0 = time.perf_counter()
        result = pipe.fuse(thermal, visible, name=name)
        return result.image, '', (time.perf_counter() - t0) * 1e3
    except (ImageError, ValueError) as exc:
        return None, str(exc), 0.0
    except Exception as exc:  # noqa: BLE001 - a model error must not lose the other pairs
        return None, f'{type(exc).__name__}: {exc}', 0.0


def _progress_bar(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, unit='frame', file=sys.stderr, leave=False)


# --------------------------------------------------------------------------------------------
# Sample bags
# --------------------------------------------------------------------------------------------

#: Radiometric model of the sample thermal stream: counts are centikelvin ("TLinear" output of
#: FLIR Boson/Tau radiometric cores), 8-bit level v -> -5 C + 0.2 K * v, plus sensor noise.
THERMAL_OFFSET = 26815.0   # cK: -5 C
THERMAL_GAIN = 20.0        # cK per 8-bit level: 0.2 K, so 0..255 spans -5..+46 C
THERMAL_NOISE = 5.0        # cK, standard deviation: a 50 mK NETD


@dataclass
class SampleBag:
    """What :func:`make_sample_bag` wrote."""

    path: Path
    storage: str
    frames: int
    rate_hz: float
    thermal_topic: str
    rgb_topic: str
    thermal_encoding: str
    rgb_encoding: str
    visible_size: tuple[int, int]
    thermal_size: tuple[int, int]
    homography: np.ndarray | None
    params_file: Path
    pairs: list[str]
    #: per frame: (pair index, RGB stamp ns, thermal stamp ns)
    schedule: list[tuple[int, int, int]] = field(default_factory=list)

    def homography_list(self) -> list[float]:
        return [] if self.homography is None else [float(x) for x in self.homography.ravel()]

    def format(self) -> str:
        vw, vh = self.visible_size
        tw, th = self.thermal_size
        lines = [f'wrote {self.path} ({self.storage}): {self.frames} thermal + {self.frames} RGB '
                 f'frames at {self.rate_hz:g} Hz from {len(self.pairs)} pair(s)',
                 f'  {self.thermal_topic}: {self.thermal_encoding} {tw}x{th}, '
                 'frame_id thermal_camera_optical_frame',
                 f'  {self.rgb_topic}: {self.rgb_encoding} {vw}x{vh}, '
                 'frame_id rgb_camera_optical_frame']
        if self.homography is not None:
            nums = ', '.join(f'{x:.6g}' for x in self.homography_list())
            lines.append(f'  thermal -> visible homography: [{nums}]')
        lines.append(f'  node parameters for this bag: {self.params_file}')
        return '\n'.join(lines)


def parse_size(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``'640x480'`` -> ``(640, 480)``; tuples pass through; None stays None."""
    if text is None or isinstance(text, tuple):
        return text
    try:
        w, h = (int(v) for v in str(text).lower().split('x'))
    except ValueError:
        raise ValueError(f'a size is WIDTHxHEIGHT, e.g. 640x480; got {text!r}') from None
    if w <= 0 or h <= 0:
        raise ValueError(f'a size must be positive, got {text!r}')
    return w, h


def scale_homography(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """The homography that maps pixel coordinates of an image of size ``src`` onto the same
    view resized to ``dst`` (pixel centres aligned, as ``cv2.resize`` does)."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _crop_to_aspect(img: np.ndarray, aspect: float) -> np.ndarray:
    h, w = img.shape[:2]
    if w / h > aspect:
        nw = max(1, round(h * aspect))
        x0 = (w - nw) // 2
        return img[:, x0:x0 + nw]
    nh = max(1, round(w / aspect))
    y0 = (h - nh) // 2
    return img[y0:y0 + nh]


def _params_yaml(info: SampleBag) -> str:
    vw, vh = info.visible_size
    tw, th = info.thermal_size
    lines = [f'# sgdfuse_node parameters for the sample bag {info.path.name} '
             '(written by `sgdfuse bag make-sample`).',
             f'# thermal {tw}x{th} {info.thermal_encoding}, RGB {vw}x{vh} {info.rgb_encoding}, '
             f'{info.rate_hz:g} Hz.',
             '# Use it after the main file:  sgdfuse_node --ros-args --params-file '
             'config/sgdfuse.yaml --params-file THIS_FILE',
             '/**:', '  ros__parameters:',
             f'    thermal_topic: {info.thermal_topic}',
             f'    rgb_topic: {info.rgb_topic}']
    if info.homography is not None:
        nums = ', '.join(repr(x) for x in info.homography_list())
        lines += ['    # thermal -> visible pixel homography (row-major): the thermal camera '
                  'has its own resolution', f'    homography: [{nums}]']
    return '\n'.join(lines) + '\n'


def params_file_for(bag: str | os.PathLike) -> Path:
    """Where :func:`make_sample_bag` writes the node parameters of a bag: ``BAG.params.yaml``
    beside the bag folder."""
    bag = Path(bag)
    return bag.with_name(bag.name + '.params.yaml')


def make_sample_bag(out: str | os.PathLike, pairs_dir: str | os.PathLike | None = None, *,
                    rate_hz: float = 10.0, frames: int | None = None, repeat: int = 1,
                    hold: int = 1, thermal_encoding: str = 'mono16', rgb_encoding: str = 'rgb8',
                    visible_size: tuple[int, int] | str | None = (640, 480),
                    thermal_size: tuple[int, int] | str | None = None, storage: str = 'mcap',
                    thermal_topic: str = DEFAULT_THERMAL_TOPIC,
                    rgb_topic: str = DEFAULT_RGB_TOPIC, jitter_s: float = 0.01, seed: int = 0,
                    start_ns: int = 1_700_000_000 * 1_000_000_000,
                    progress: bool = False) -> SampleBag:
    """Write a two-camera sample bag built from registered image pairs.

    ``pairs_dir`` holds ``ir/`` and ``vi/`` with matching file names (default: the bundled
    samples). Each pair is centre-cropped to the aspect of ``visible_size`` and resized to it
    (None: the first pair's size). The RGB stream is ``rgb8`` or ``bgr8``. The thermal stream
    is ``mono16`` radiometric counts (centikelvin: :data:`THERMAL_OFFSET` + :data:`THERMAL_GAIN`
    * the 8-bit level + Gaussian noise of :data:`THERMAL_NOISE`, fresh each frame) or ``mono8``;
    at ``thermal_size`` when given, in which case the thermal -> visible homography is returned
    and written to the parameter file.

    Frames: ``frames`` in total (default ``len(pairs) * repeat * hold``), each pair shown for
    ``hold`` consecutive frames, at ``rate_hz``. The thermal stamp of each frame differs from
    the RGB one by a uniform jitter of up to ``jitter_s`` (kept below a quarter period), as two
    free-running cameras do; messages are logged 2-4 ms after their stamps, in arrival order.

    Next to the bag, ``BAG.params.yaml`` (:func:`params_file_for`) holds the node parameters
    for it (topics, and the homography when the sizes differ).
    """
    from sgdfuse_ros.core.paths import samples_dir

    out = Path(out)
    pairs_dir = Path(pairs_dir) if pairs_dir is not None else samples_dir()
    visible_size, thermal_size = parse_size(visible_size), parse_size(thermal_size)
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f'rate must be > 0 Hz, got {rate_hz}')
    if thermal_encoding not in ('mono16', 'mono8'):
        raise ValueError(f'thermal encoding must be mono16 or mono8, got {thermal_encoding!r}')
    if rgb_encoding not in ('rgb8', 'bgr8'):
        raise ValueError(f'RGB encoding must be rgb8 or bgr8, got {rgb_encoding!r}')
    if repeat < 1 or hold < 1 or (frames is not None and frames < 1):
        raise ValueError('frames, repeat and hold must be >= 1')
    if not jitter_s >= 0:
        raise ValueError(f'jitter must be >= 0 s, got {jitter_s}')
    if thermal_topic == rgb_topic:
        raise ValueError('the thermal and RGB topics must differ')
    if out.exists():
        raise BagError(f'{out}: already exists; choose a new output path')
    try:
        pairs, problems = imaging.match_pairs(pairs_dir / 'ir', pairs_dir / 'vi')
    except ImageError as exc:
        raise BagError(f'{pairs_dir}: need ir/ and vi/ folders of image pairs ({exc})') from exc
    if not pairs:
        raise BagError(f'{pairs_dir}: no image pairs with matching names in ir/ and vi/')

    sources = []
    for p in pairs:
        ir = imaging.read_image(p.ir, gray=True)
        vis = imaging.read_image(p.vis, gray=False)
        if ir.dtype != np.uint8:
            ir = imaging.to_uint8(imaging.ThermalGain(smoothing=0.0)(ir))
        if ir.shape[:2] != vis.shape[:2]:
            raise BagError(f'{p.name}: infrared {ir.shape[1]}x{ir.shape[0]} and visible '
                           f'{vis.shape[1]}x{vis.shape[0]} differ; the pairs must be registered')
        size = visible_size or (vis.shape[1], vis.shape[0])
        aspect = size[0] / size[1]
        vis = imaging.resize(_crop_to_aspect(vis, aspect), size)
        ir = imaging.resize(_crop_to_aspect(ir, aspect), size)
        if visible_size is None:
            visible_size = size
        t_size = thermal_size or size
        ir_t = imaging.resize(ir, t_size)
        if rgb_encoding == 'bgr8':
            vis = np.ascontiguousarray(vis[:, :, ::-1])
        sources.append((ir_t, vis))
    thermal_size = thermal_size or visible_size
    homography = (None if thermal_size == visible_size
                  else scale_homography(thermal_size, visible_size))

    n_frames = frames if frames is not None else len(pairs) * repeat * hold
    period_ns = int(round(1e9 / rate_hz))
    jitter_ns = int(min(jitter_s * 1e9, period_ns / 4))
    rng = np.random.default_rng(seed)
    info = SampleBag(path=out, storage=storage, frames=n_frames, rate_hz=float(rate_hz),
                     thermal_topic=thermal_topic, rgb_topic=rgb_topic,
                     thermal_encoding=thermal_encoding, rgb_encoding=rgb_encoding,
                     visible_size=visible_size, thermal_size=thermal_size,
                     homography=homography, params_file=params_file_for(out),
                     pairs=[p.name for p in pairs])
    ts = typestore()
    writer = _open_writer(out, storage)
    try:
        t_conn = writer.add_connection(thermal_topic, IMAGE, typestore=ts,
                                       offered_qos_profiles=[_qos_sensor()])
        r_conn = writer.add_connection(rgb_topic, IMAGE, typestore=ts,
                                       offered_qos_profiles=[_qos_sensor()])
        pending: list[tuple[int, int, Any, bytes]] = []
        seq = 0
        bar = _progress_bar(n_frames, 'make-sample', progress)
        for i in range(n_frames):
            k = (i // hold) % len(sources)
            ir_t, vis = sources[k]
            rgb_stamp = start_ns + i * period_ns + int(rng.integers(-500_000, 500_001))
            th_stamp = rgb_stamp + (int(rng.integers(-jitter_ns, jitter_ns + 1))
                                    if jitter_ns else 0)
            if thermal_encoding == 'mono16':
                counts = (THERMAL_OFFSET + THERMAL_GAIN * ir_t.astype(np.float32)
                          + rng.normal(0.0, THERMAL_NOISE, ir_t.shape).astype(np.float32))
                thermal = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
            else:
                thermal = ir_t
            t_msg = image_message(thermal, thermal_encoding,
                                  _header(th_stamp, 'thermal_camera_optical_frame'))
            r_msg = image_message(vis, rgb_encoding,
                                  _header(rgb_stamp, 'rgb_camera_optical_frame'))
            for conn, stamp, msg, lat in ((t_conn, th_stamp, t_msg, 3_000_000),
                                          (r_conn, rgb_stamp, r_msg, 2_000_000)):
                log_ns = stamp + lat + int(rng.integers(0, 1_000_001))
                heapq.heappush(pending, (log_ns, seq, conn, bytes(ts.serialize_cdr(msg, IMAGE))))
                seq += 1
            info.schedule.append((k, rgb_stamp, th_stamp))
            # Every later message is logged after this frame's RGB stamp + period / 2.
            horizon = rgb_stamp + period_ns // 2
            while pending and pending[0][0] <= horizon:
                log_ns, _, conn, data = heapq.heappop(pending)
                writer.write(conn, log_ns, data)
            if bar is not None:
                bar.update(1)
        while pending:
            log_ns, _, conn, data = heapq.heappop(pending)
            writer.write(conn, log_ns, data)
        if bar is not None:
            bar.close()
        writer.close()
    except BaseException:
        _discard_output(writer, out)
        raise
    info.params_file.write_text(_params_yaml(info))
    return info


# --------------------------------------------------------------------------------------------
# Node parameter files
# --------------------------------------------------------------------------------------------

def load_node_params(*paths: str | os.PathLike) -> dict[str, Any]:
    """The ``ros__parameters`` of one or more node parameter files, later files winning (as
    ``--params-file`` given twice). Entries for ``/**``, ``sgdfuse`` and ``/sgdfuse`` apply."""
    import yaml

    out: dict[str, Any] = {}
    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f'{path}: cannot read the parameter file ({exc})') from exc
        if not isinstance(doc, dict):
            raise ValueError(f'{path}: not a ROS 2 parameter file')
        for key in ('/**', 'sgdfuse', '/sgdfuse'):
            section = doc.get(key)
            if isinstance(section, dict) and isinstance(section.get('ros__parameters'), dict):
                out.update(section['ros__parameters'])
    return out


# --------------------------------------------------------------------------------------------
# Live graph: play and record (rclpy)
# --------------------------------------------------------------------------------------------

def _msg_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``, or None when it is not installed."""
    try:
        pkg, kind, name = msgtype.split('/')
        return getattr(importlib.import_module(f'{pkg}.{kind}'), name)
    except (ValueError, ImportError, AttributeError):
        return None


def _rclpy_qos(reliability: str, depth: int):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if reliability not in ('best_effort', 'reliable'):
        raise ValueError(f'reliability must be best_effort or reliable, got {reliability!r}')
    if depth < 1:
        raise ValueError(f'QoS depth must be >= 1, got {depth}')
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
                                   else ReliabilityPolicy.RELIABLE),
                      durability=DurabilityPolicy.VOLATILE)


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)
    skipped_topics: list[str] = field(default_factory=list)
    loops: int = 0
    wall_s: float = 0.0
    bag_s: float = 0.0
    #: largest delay (s) of a publish behind its scheduled time
    max_lag_s: float = 0.0
    interrupted: bool = False

    def format(self) -> str:
        n = sum(self.published.values())
        text = (f'published {n} message(s) on {len(self.published)} topic(s) in '
                f'{self.wall_s:.1f} s ({self.bag_s:.1f} s of bag time'
                + (f', {self.loops} loops' if self.loops > 1 else '')
                + f'; largest lag {self.max_lag_s * 1e3:.0f} ms)')
        for topic, c in self.published.items():
            text += f'\n  {topic}: {c}'
        for t in self.skipped_topics:
            text += f'\n  skipped {t}'
        return text


class BagPlayer:
    """Publish a bag's messages into a live graph, timed by their recorded (log) times.

    Messages are published as they were recorded (serialized CDR, no re-encoding). Image topics
    use the sensor-data QoS of the node (``best_effort``, depth 5) unless told otherwise;
    other topics use ``reliable``. ``clock=True`` also publishes the bag time on ``/clock``
    (``clock_hz`` times per second and before every message), for nodes with use_sim_time.
    ``on_publish(topic, log_ns, raw, wall_ns)`` is called after each publish (from the playing
    thread). Topics whose message package is not installed are skipped, with a note.
    """

    def __init__(self, node, path: str | os.PathLike, *, rate: float = 1.0, loop: bool = False,
                 clock: bool = False, clock_hz: float = 40.0, topics: list[str] | None = None,
                 qos_reliability: str = 'best_effort', qos_depth: int = 5,
                 on_publish: Callable[[str, int, bytes, int], None] | None = None):
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f'rate must be > 0, got {rate}')
        if clock and not clock_hz > 0:
            raise ValueError(f'clock rate must be > 0 Hz, got {clock_hz}')
        self.node = node
        self.path = Path(path)
        self.rate = float(rate)
        self.loop = bool(loop)
        self.clock = bool(clock)
        self.clock_period = 1.0 / clock_hz if clock else 0.0
        self.on_publish = on_publish
        self.stats = PlayStats()
        with _BagReader(self.path) as reader:
            bag_topics = reader.topics()
        if topics:
            missing = [t for t in topics if t not in bag_topics]
            if missing:
                raise BagError(f'{self.path}: no topic {", ".join(missing)} in the bag')
            bag_topics = {t: bag_topics[t] for t in topics}
        if not bag_topics:
            raise BagError(f'{self.path}: the bag has no topics')
        image_qos = _rclpy_qos(qos_reliability, qos_depth)
        other_qos = _rclpy_qos('reliable', max(qos_depth, 10))
        self.publishers: dict[str, Any] = {}
        for topic, (msgtype, _) in bag_topics.items():
            cls = _msg_class(msgtype)
            if cls is None:
                self.stats.skipped_topics.append(f'{topic} ({msgtype}: message package not '
                                                 'installed)')
                continue
            qos = image_qos if msgtype in IMAGE_TYPES else other_qos
            self.publishers[topic] = node.create_publisher(cls, topic, qos)
            self.stats.published[topic] = 0
        if not self.publishers:
            raise BagError(f'{self.path}: none of the topics can be published here '
                           f'({"; ".join(self.stats.skipped_topics)})')
        self._clock_pub = None
        if self.clock:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = node.create_publisher(Clock, '/clock', _rclpy_qos('reliable', 1))

    def wait_for_subscribers(self, topics: list[str] | None = None, timeout: float = 10.0,
                             stop: threading.Event | None = None) -> bool:
        """Wait until each of ``topics`` (default: every published topic) has a subscriber."""
        wanted = [self.publishers[t] for t in (topics or list(self.publishers))]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in wanted):
                return True
            if stop is not None and stop.is_set():
                return False
            time.sleep(0.05)
        return False

    def _publish_clock(self, bag_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec = int(bag_ns // 1_000_000_000)
        msg.clock.nanosec = int(bag_ns % 1_000_000_000)
        self._clock_pub.publish(msg)

    def _wait(self, target: float, bag_at: Callable[[float], int], stop) -> bool:
        """Sleep until ``target`` (monotonic), publishing /clock; False when stopped."""
        next_clock = time.monotonic()
        while True:
            if stop is not None and stop.is_set():
                return False
            now = time.monotonic()
            if now >= target:
                return True
            if self._clock_pub is not None and now >= next_clock:
                self._publish_clock(bag_at(now))
                next_clock = now + self.clock_period
            step = target - now
            if self._clock_pub is not None:
                step = min(step, max(next_clock - now, 0.0))
            time.sleep(min(step, 0.05))

    def run(self, stop: threading.Event | None = None) -> PlayStats:
        """Play (once, or until ``stop`` with ``loop``); returns the statistics."""
        t_begin = time.monotonic()
        try:
            while True:
                self.stats.loops += 1
                completed = self._play_once(stop)
                if not completed or not self.loop:
                    break
        except KeyboardInterrupt:
            self.stats.interrupted = True
        self.stats.wall_s = time.monotonic() - t_begin
        return self.stats

    def _play_once(self, stop) -> bool:
        with _BagReader(self.path) as reader:
            conns = [c for c in reader.connections if c.topic in self.publishers]
            first = None
            wall0 = 0.0
            for conn, log_ns, raw in reader.messages(conns):
                if first is None:
                    first, wall0 = log_ns, time.monotonic()

                def bag_at(now: float, first=first, wall0=wall0) -> int:
                    return first + int((now - wall0) * self.rate * 1e9)

                target = wall0 + (log_ns - first) / 1e9 / self.rate
                if not self._wait(target, bag_at, stop):
                    self.stats.interrupted = True
                    return False
                self.stats.max_lag_s = max(self.stats.max_lag_s, time.monotonic() - target)
                if self._clock_pub is not None:
                    self._publish_clock(log_ns)
                data = bytes(raw)
                self.publishers[conn.topic].publish(data)
                self.stats.published[conn.topic] += 1
                self.stats.bag_s = max(self.stats.bag_s, (log_ns - first) / 1e9)
                if self.on_publish is not None:
                    self.on_publish(conn.topic, log_ns, data, time.time_ns())
            return True


@dataclass
class RecordStats:
    path: str
    storage: str
    counts: dict[str, int] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def format(self) -> str:
        text = (f'recorded {self.total} message(s) on {len(self.counts)} topic(s) in '
                f'{self.wall_s:.1f} s -> {self.path} ({self.storage})')
        for t, c in self.counts.items():
            text += f'\n  {t}: {c}'
        for t in self.waiting:
            text += f'\n  {t}: never published (no type known, not recorded)'
        for t in self.skipped:
            text += f'\n  skipped {t}'
        return text


class BagRecorder:
    """Record topics of a live graph into a new bag (serialized CDR as received).

    ``types`` maps topics to message types known in advance; other topics are subscribed as
    soon as a publisher shows their type (:meth:`poll`, also run by a timer of ``node``). QoS:
    ``reliable`` when every publisher of the topic offers it, else ``best_effort`` (which
    matches both); ``depth`` deep. Messages are logged with their receive time (the node's
    clock). Thread-safe: callbacks run in the node's executor, :meth:`close` from anywhere.
    """

    def __init__(self, node, out: str | os.PathLike, topics: list[str], *,
                 storage: str = 'mcap', types: dict[str, str] | None = None, depth: int = 100,
                 on_message: Callable[[str, bytes, int], None] | None = None):
        if not topics:
            raise ValueError('give at least one topic to record')
        self.node = node
        self.out = Path(out)
        self.storage = storage
        self.depth = depth
        self.on_message = on_message
        self.stats = RecordStats(str(self.out), storage)
        self._lock = threading.Lock()
        self._writer = _open_writer(self.out, storage)
        self._conns: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}
        self._pending = {t: (types or {}).get(t) for t in dict.fromkeys(topics)}
        self._t0 = time.monotonic()
        self.poll()
        self._timer = node.create_timer(0.2, self.poll)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats.counts)

    def publisher_count(self, topic: str) -> int:
        """Publishers matched by the recording subscription of ``topic`` (0 before it
        exists)."""
        sub = self._subs.get(topic)
        return sub.get_publisher_count() if sub is not None else 0

    def poll(self) -> None:
        """Subscribe to the topics whose type is now known."""
        if not self._pending:
            return
        try:
            graph = dict(self.node.get_topic_names_and_types())
        except Exception:  # noqa: BLE001 - node shutting down
            return
        for topic in list(self._pending):
            msgtype = self._pending[topic]
            if msgtype is None:
                found = graph.get(topic) or graph.get(self.node.resolve_topic_name(topic))
                if not found:
                    continue
                msgtype = found[0]
            self._pending.pop(topic)
            self._subscribe(topic, msgtype)

    def _subscribe(self, topic: str, msgtype: str) -> None:
        cls = _msg_class(msgtype)
        ts = typestore()
        if cls is None or msgtype not in ts.types:
            self.stats.skipped.append(f'{topic} ({msgtype}: message type unknown here)')
            return
        reliability = 'best_effort'
        try:
            infos = self.node.get_publishers_info_by_topic(topic)
            from rclpy.qos import ReliabilityPolicy

            if infos and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                             for i in infos):
                reliability = 'reliable'
        except Exception:  # noqa: BLE001 - keep best effort
            pass
        with self._lock:
            if self._writer is None:
                return
            self._conns[topic] = self._writer.add_connection(
                topic, msgtype, typestore=ts,
                offered_qos_profiles=[_qos_sensor(reliability, self.depth)])
            self.stats.counts[topic] = 0
        self._subs[topic] = self.node.create_subscription(
            cls, topic, lambda raw, t=topic: self._on_msg(t, raw),
            _rclpy_qos(reliability, self.depth), raw=True)

    def _on_msg(self, topic: str, raw: bytes) -> None:
        try:
            now = self.node.get_clock().now().nanoseconds
            with self._lock:
                if self._writer is None:
                    return
                self._writer.write(self._conns[topic], now, raw)
                self.stats.counts[topic] += 1
            if self.on_message is not None:
                self.on_message(topic, raw, now)
        except Exception as exc:  # noqa: BLE001 - never raise in a callback
            self.node.get_logger().error(f'recording {topic}: {type(exc).__name__}: {exc}',
                                         throttle_duration_sec=5.0)

    def close(self) -> RecordStats:
        """Stop recording and finish the bag (metadata written)."""
        try:
            self.node.destroy_timer(self._timer)
        except Exception:  # noqa: BLE001
            pass
        for sub in self._subs.values():
            try:
                self.node.destroy_subscription(sub)
            except Exception:  # noqa: BLE001
                pass
        self._subs.clear()
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.close()
        self.stats.waiting = [t for t in self._pending]
        self.stats.wall_s = time.monotonic() - self._t0
        return self.stats


def _ros_env_defaults() -> None:
    """Loopback-only discovery unless configured (``scripts/env.sh`` does the same)."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    profile = Path(__file__).resolve().parents[2] / 'config' / 'fastdds_shm.xml'
    if profile.is_file():
        os.environ.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE', str(profile))


def play_bag(in_path: str | os.PathLike, *, rate: float = 1.0, loop: bool = False,
             clock: bool = False, topics: list[str] | None = None,
             qos_reliability: str = 'best_effort', qos_depth: int = 5,
             wait_for_subscribers: float = 0.0) -> PlayStats:
    """Play a bag into the ROS 2 graph (see :class:`BagPlayer`) until it ends, or until Ctrl-C
    with ``loop``. ``wait_for_subscribers`` seconds: wait (at most) for every topic to have a
    subscriber first."""
    _ros_env_defaults()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('sgdfuse_bag_player', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor,), daemon=True)
    spinner.start()
    try:
        player = BagPlayer(node, in_path, rate=rate, loop=loop, clock=clock, topics=topics,
                           qos_reliability=qos_reliability, qos_depth=qos_depth)
        try:
            if wait_for_subscribers > 0:
                player.wait_for_subscribers(timeout=wait_for_subscribers)
            return player.run()
        except KeyboardInterrupt:
            player.stats.interrupted = True
            return player.stats
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=2.0)


def _spin(executor) -> None:
    try:
        executor.spin()
    except Exception:  # noqa: BLE001 - ExternalShutdownException at the end
        pass


def record_bag(out: str | os.PathLike, topics: list[str], *, duration: float | None = None,
               max_messages: int | None = None, storage: str = 'mcap',
               types: dict[str, str] | None = None,
               stop: threading.Event | None = None) -> RecordStats:
    """Record ``topics`` into a new bag until ``duration`` seconds have passed,
    ``max_messages`` were recorded, ``stop`` is set, or Ctrl-C."""
    _ros_env_defaults()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    if duration is not None and not duration > 0:
        raise ValueError(f'duration must be > 0 s, got {duration}')
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('sgdfuse_bag_recorder', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    recorder = None
    try:
        recorder = BagRecorder(node, out, topics, storage=storage, types=types)
        end = time.monotonic() + duration if duration else math.inf
        try:
            while time.monotonic() < end and not (stop is not None and stop.is_set()):
                executor.spin_once(timeout_sec=min(0.1, max(end - time.monotonic(), 0.0)))
                if max_messages and sum(recorder.counts.values()) >= max_messages:
                    break
        except KeyboardInterrupt:
            pass
        return recorder.close()
    except BaseException:
        if recorder is not None:
            try:
                recorder.close()
            except Exception:  # noqa: BLE001
                pass
        raise
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


__all__ = ['BagError', 'BagPlayer', 'BagRecorder', 'FuseSummary', 'PlayStats', 'RecordStats',
           'SampleBag', 'bag_info', 'detect_storage', 'fuse_bag', 'image_message',
           'load_node_params', 'make_sample_bag', 'params_file_for', 'parse_size', 'play_bag',
           'read_messages', 'record_bag', 'scale_homography', 'stamp_ns', 'typestore']

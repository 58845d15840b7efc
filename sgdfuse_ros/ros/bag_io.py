"""rosbag2 files without ROS: reading, writing, message types, bag information.

Reading and writing go through the pure-Python ``rosbags`` library and its own message types
(the ROS 2 Jazzy typestore), so nothing here needs a ROS installation. Both rosbag2 storage
formats are handled: ``mcap`` and ``sqlite3``; a bag's format is read from its ``metadata.yaml``
(or a bare ``.mcap`` / ``.db3`` file's suffix). Bags are written with metadata version 8 (what
ROS 2 Jazzy's rosbag2 writes and reads).

Every failure to read or write a bag is a :class:`BagError` naming the bag and the cause.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import sys
from typing import Any, Iterator

import numpy as np

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED)
STORAGES = ('mcap', 'sqlite3')
#: rosbag2 metadata version written (ROS 2 Jazzy writes 8; version 9 is Kilted's).
BAG_VERSION = 8


class BagError(RuntimeError):
    """A bag that cannot be used (missing, corrupt, truncated, wrong topics or types), or an
    output that cannot be written. Fatal: no output bag is left behind."""

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


def storage_plugin(storage: str):
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


class BagReader:
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

    def rate(self, topic: str) -> float | None:
        """Messages per second of ``topic`` over the bag's duration (from the metadata), or
        None when the bag cannot tell (fewer than two messages, no duration)."""
        count = sum(int(c.msgcount or 0) for c in self.connections if c.topic == topic)
        duration = self._reader.duration / 1e9 if self._reader.message_count else 0.0
        return (count - 1) / duration if count > 1 and duration > 0 else None

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

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bag_info(path: str | os.PathLike) -> dict[str, Any]:
    """Storage, duration, message count and ``{topic: (type, count)}`` of a bag."""
    with BagReader(path) as reader:
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
    with BagReader(path) as reader:
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


def make_header(stamp: int, frame_id: str):
    """A ``rosbags`` std_msgs/Header with ``stamp`` (ns) and ``frame_id``."""
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


def offered_qos(reliability: str = 'best_effort', depth: int = 5):
    """A rosbags QoS profile (for a topic's ``offered_qos_profiles``)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.BEST_EFFORT if reliability == 'best_effort'
               else QosReliability.RELIABLE,
               QosDurability.VOLATILE, zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def open_writer(out: Path, storage: str):
    from rosbags.rosbag2 import Writer

    if out.exists():
        raise BagError(f'{out}: already exists; choose a new output path')
    if not out.parent.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer = Writer(out, version=BAG_VERSION, storage_plugin=storage_plugin(storage))
        writer.open()
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise BagError(f'{out}: cannot create the bag ({type(exc).__name__}: {exc})') from exc
    return writer


def discard_output(writer, out: Path) -> None:
    """Abort a writer and remove the partial bag it made."""
    if writer is not None:
        try:
            writer.abort()
        except Exception:  # noqa: BLE001
            pass
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)


def copy_connection(writer, conn) -> Any | None:
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


def progress_bar(total: int | None, desc: str, enabled: bool):
    """A tqdm bar on stderr counting frames, or None when disabled (or tqdm is missing)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, unit='frame', file=sys.stderr, leave=False)


__all__ = ['BAG_VERSION', 'COMPRESSED', 'IMAGE', 'IMAGE_TYPES', 'STORAGES', 'BagError',
           'BagReader', 'bag_info', 'copy_connection', 'detect_storage', 'discard_output',
           'image_message', 'make_header', 'offered_qos', 'open_writer', 'progress_bar',
           'read_messages', 'stamp_ns', 'storage_plugin', 'typestore']

"""The manifest of a fleet run: one JSON file in the output folder with every bag's state.

Layout of the output folder ``DIR``::

    DIR/sgdfuse-manifest.json   the manifest (rewritten atomically after every change)
    DIR/<bag name>/             one fused bag per input bag, complete or absent
    DIR/.sgdfuse-partial/       work in progress (bags being written, time ranges); removed at
                                the start of the next run, so a killed run leaves no litter
    DIR/.sgdfuse-lock           held while a run writes to DIR (one run per folder at a time)

A bag's entry (``bags[name]``) has a ``state``:

``done``       the output is complete: ``sha256`` (:func:`tree_digest` of the output folder),
               ``bytes``, the pair counts, the frames left unmatched per topic, the pairs that
               failed, the worker's timing and node;
``finishing``  the same record, written just before the output is renamed into place: a run
               killed at that moment leaves an output that the next run accepts if its
               checksum matches;
``failed``     ``reason`` says why, ``attempts`` how many times it was tried.

A ``done`` entry counts only while its ``options_key`` (see :meth:`.FuseOptions.key`) and its
``input`` fingerprint (size and modification time) match the current run and the output still
has its checksum; otherwise the bag is fused again.
"""

from __future__ import annotations

from contextlib import contextmanager
import hashlib
import json
import os
from pathlib import Path
import time
from typing import Any, Iterator

from sgdfuse_ros.core.files import atomic_write_bytes
from sgdfuse_ros.core.hashing import sha256_file

MANIFEST_NAME = 'sgdfuse-manifest.json'
PARTIAL_DIR = '.sgdfuse-partial'
LOCK_NAME = '.sgdfuse-lock'
#: Output names starting with this belong to the run itself.
RESERVED_PREFIX = '.sgdfuse'
VERSION = 1


class ManifestError(RuntimeError):
    """A manifest that cannot be read or written, or an output folder in use."""


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob('*') if p.is_file())


def tree_digest(path: str | os.PathLike) -> tuple[str, int]:
    """SHA-256 of a bag folder (each file's relative name and SHA-256, in name order) and its
    size in bytes. Names are relative, so the digest survives renaming the folder."""
    path = Path(path)
    h = hashlib.sha256()
    size = 0
    for f in _files(path):
        rel = f.name if f == path else f.relative_to(path).as_posix()
        h.update(f'{rel}\0{sha256_file(f)}\n'.encode())
        size += f.stat().st_size
    return h.hexdigest(), size


def tree_size(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in _files(Path(path)))


def input_fingerprint(path: str | os.PathLike) -> dict[str, int]:
    """Size and newest modification time of an input bag: a changed input is fused again."""
    files = _files(Path(path))
    return {'bytes': sum(f.stat().st_size for f in files),
            'mtime_ns': max((f.stat().st_mtime_ns for f in files), default=0)}


class Manifest:
    """The manifest of one output folder (see the module docstring)."""

    def __init__(self, out_dir: str | os.PathLike, data: dict[str, Any] | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME
        self.data = data or {'version': VERSION, 'tool': 'sgdfuse bag fuse-many', 'bags': {},
                             'runs': []}

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> Manifest:
        """The folder's manifest, or an empty one when there is none yet."""
        path = Path(out_dir) / MANIFEST_NAME
        if not path.exists():
            return cls(out_dir)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f'{path}: unreadable manifest ({exc}); move it away to start '
                                'over') from exc
        if not isinstance(data, dict) or not isinstance(data.get('bags'), dict):
            raise ManifestError(f'{path}: not a fuse-many manifest')
        if data.get('version') != VERSION:
            raise ManifestError(f'{path}: manifest version {data.get("version")!r}, this '
                                f'version reads {VERSION}')
        data.setdefault('runs', [])
        return cls(out_dir, data)

    @property
    def bags(self) -> dict[str, dict[str, Any]]:
        return self.data['bags']

    def get(self, name: str) -> dict[str, Any] | None:
        return self.bags.get(name)

    def set(self, name: str, entry: dict[str, Any], *, save: bool = True) -> None:
        entry = dict(entry)
        entry['updated'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
        self.bags[name] = entry
        if save:
            self.save()

    def save(self) -> None:
        """Write the manifest atomically (a temporary file in DIR, flushed, then renamed)."""
        atomic_write_bytes(self.path, (json.dumps(self.data, indent=1, sort_keys=True)
                                       + '\n').encode(), mode=0o644)

    def stale(self, name: str, options_key: str, fingerprint: dict[str, int]) -> str | None:
        """Why the finished output of ``name`` cannot be kept (``not finished``, ``options
        changed``, ``input changed``), or None when it can, if its checksum still matches
        (checked separately)."""
        e = self.get(name)
        if e is None or e.get('state') not in ('done', 'finishing') or not e.get('sha256'):
            return 'not finished'
        if e.get('options_key') != options_key:
            return 'options changed'
        if e.get('input_stat') != fingerprint:
            return 'input changed'
        return None


@contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold ``DIR/.sgdfuse-lock`` for the duration (an exclusive ``flock``): a second run
    writing to the same folder is refused instead of corrupting the first."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    f = open(out_dir / LOCK_NAME, 'a+')
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ManifestError(f'{out_dir}: another fuse-many run is writing to this folder') \
                from exc
        except OSError:
            pass  # a file system without locks: carry on unlocked
        yield
    finally:
        f.close()

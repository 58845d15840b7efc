"""Output paths of the command-line tools, checked before anything is written.

* An output never replaces an input: not by the same path, not through a link (the same file
  by device and inode), and an output written into an input folder takes no name an input
  there has (``a.png`` beside the input ``a.jpg`` would be read as that input next time).
* An existing file is replaced only when the user asks (``--overwrite``). Every name is
  checked before the first is written, so a refusal leaves the folder as it was.
* Images are written atomically (a temporary name, then a rename): a full disk or an
  interruption leaves no truncated file behind.
* A file-system problem is a :class:`PathError`: one line naming the path and the problem
  (``/proc/o.png: cannot write there (No such file or directory)``), never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Iterable

import numpy as np

from . import imaging


class PathError(Exception):
    """A path a command cannot use; the message is one line that names it."""


def os_problem(path: str | os.PathLike, exc: OSError, doing: str = '') -> PathError:
    """A :class:`PathError` for an ``OSError`` met on ``path`` (``doing``: e.g. ``cannot
    write``)."""
    why = exc.strerror or str(exc)
    return PathError(f'{path}: {doing} ({why})' if doing else f'{path}: {why}')


def require_file(path: Path, flag: str) -> None:
    """``path`` (given as ``flag``) is an existing file, else :class:`PathError`."""
    if path.is_dir():
        raise PathError(f'{flag} {path}: is a folder, not a file')
    if not path.is_file():
        raise PathError(f'{flag} {path}: no such file')


def require_folder(path: Path, flag: str) -> None:
    """``path`` (given as ``flag``) is an existing folder, else :class:`PathError`."""
    if path.is_file():
        raise PathError(f'{flag} {path}: is a file, not a folder')
    if not path.is_dir():
        raise PathError(f'{flag} {path}: no such folder')


def check_output_file(path: Path, flag: str = '--out') -> None:
    """``path`` can name one written image: not a folder, an image type we can write."""
    if path.is_dir():
        raise PathError(f'{flag} {path}: is a folder; give the name of the image file to '
                        f'write (e.g. {path / "fused.png"})')
    if path.suffix and path.suffix.lower() not in imaging.IMAGE_EXTENSIONS:
        raise PathError(f'{flag} {path}: unknown image type {path.suffix!r} (use one of '
                        f'{", ".join(imaging.IMAGE_EXTENSIONS)})')


def check_output_folder(path: Path, flag: str = '--out') -> None:
    """``path`` can be the folder images are written into: a folder or nothing yet."""
    if path.exists() and not path.is_dir():
        raise PathError(f'{flag} {path}: is a file, not a folder (the images are written into '
                        'a folder)')


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_outputs(outputs: Iterable[Path], inputs: Iterable[Path], *, overwrite: bool,
                  flag: str = '--overwrite') -> None:
    """Refuse (:class:`PathError`) before anything is written when an output would replace an
    input or sit beside one under its name, is a folder, or exists already without
    ``overwrite``. Linear in the number of paths."""
    input_paths: dict[str, Path] = {}
    input_ids: dict[tuple[int, int], Path] = {}
    input_names: dict[tuple[tuple[int, int] | None, str], Path] = {}
    for p in inputs:
        input_paths[str(p.resolve())] = p
        ident = _identity(p)
        if ident is not None:
            input_ids[ident] = p
        input_names[(_identity(p.parent), p.stem)] = p
    existing: list[Path] = []
    for out in outputs:
        same = input_paths.get(str(out.resolve()))
        ident = _identity(out)
        if same is None and ident is not None:
            same = input_ids.get(ident)
        if same is not None:
            raise PathError(f'{out}: is the input {same}; an output never replaces an input '
                            '(choose another --out)')
        parent = _identity(out.parent)
        beside = input_names.get((parent, out.stem)) if parent is not None else None
        if beside is not None:
            raise PathError(f'{out}: would sit beside the input {beside} under its name (the '
                            'output folder is an input folder); choose another --out')
        if out.is_dir():
            raise PathError(f'{out}: is a folder, where an image would be written')
        if ident is not None:
            existing.append(out)
    if existing and not overwrite:
        more = f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''
        raise PathError(f'{existing[0]}: exists already{more}; pass {flag} to replace '
                        f'{"them" if more else "it"}')


def writable_folder(folder: Path, target: Path | None = None) -> None:
    """Create ``folder`` (and its parents) if needed and check that a file can be made in it,
    before any long work whose result would go there; ``target``: the file to be written
    there, named in the message. Raises :class:`PathError`."""
    where = folder if target is None else target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_problem(where, exc, f'cannot create the folder {folder}') from None
    try:
        fd, probe = tempfile.mkstemp(prefix='.sgdfuse-', suffix='.tmp', dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise os_problem(where, exc, f'cannot write in {folder}') from None


def write_image(path: Path, img: np.ndarray) -> None:
    """Write an image atomically (:func:`atomic_write_bytes`: a full disk or an interruption
    leaves the old file or none, never a truncated one), with the permissions a new file gets
    (umask); a file-system failure is a :class:`PathError`."""
    data = imaging.encode_image(path, img)
    try:
        atomic_write_bytes(path, data, mode=_new_file_mode())
    except OSError as exc:
        raise os_problem(path, exc, 'cannot write') from None


def _new_file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None
                       ) -> None:
    """Write ``data`` to a temporary file beside ``path`` (``.NAME.*.tmp``), flush it to disk,
    then rename: a reader sees the old file or the new one, never half of one. ``mode``: the
    file's permissions (default: the temporary file's, owner only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class RunOutputs:
    """The outputs a folder run writes, so that the same command run again after an
    interruption may replace them. While the run writes, ``folder/list_name`` names each
    output (before its file is written), one a line; :meth:`done` removes the list.
    ``own``: the names the list of an earlier, interrupted run holds (replaceable without
    ``--overwrite``; still never an input). ``folder`` None: a single-file run (one atomic
    file, nothing to list)."""

    def __init__(self, folder: Path | None, list_name: str):
        self.path = Path(folder) / list_name if folder is not None else None
        self.names: set[str] = set()
        self.own: set[str] = set()
        if self.path is not None:
            try:
                text = self.path.read_text()
            except (OSError, UnicodeDecodeError):
                text = ''
            self.own = {line for line in text.splitlines() if line and '/' not in line}

    def start(self) -> None:
        """Write the list (the earlier run's names kept: they are still this run's)."""
        if self.path is not None:
            atomic_write_bytes(self.path, ''.join(f'{n}\n' for n in sorted(self.own)).encode(),
                               mode=_new_file_mode())

    def write_image(self, path: Path, img: np.ndarray) -> None:
        """List ``path``, then :func:`write_image` it."""
        if self.path is not None and path.name not in self.own | self.names:
            try:
                with open(self.path, 'a') as f:
                    f.write(path.name + '\n')
            except OSError as exc:
                raise os_problem(self.path, exc, 'cannot write') from None
        self.names.add(path.name)
        write_image(path, img)

    def done(self) -> None:
        """The run finished: its outputs are ordinary files now."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

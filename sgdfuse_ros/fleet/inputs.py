"""Which bags a fleet run fuses, and where each one's output goes.

An input is a rosbag2 bag (a folder with ``metadata.yaml``, or a bare ``.mcap`` / ``.db3``
file), a folder searched for bags (hidden folders and the output folder are skipped; a bag
folder is not searched further), a glob (``/data/*/2024-05-*``; ``**`` recurses), or a text
file listing bags one per line (``#`` starts a comment; relative paths are relative to the
list file).

Each bag gets an output name: its path relative to the searched folder (``veh07/morning``), or
its own name when named directly, by a glob or in a list (a bare file loses its suffix). Two
bags with the same output name are an error, as is an output that would overlap an input
(an output is never written over an input, not even through a link).
"""

from __future__ import annotations

from dataclasses import dataclass
import glob
import os
from pathlib import Path

from .manifest import MANIFEST_NAME, RESERVED_PREFIX

BAG_SUFFIXES = ('.mcap', '.db3')


class InputError(ValueError):
    """An input that names no bag, or bags whose outputs would collide or overlap."""


@dataclass(frozen=True)
class BagInput:
    """One bag to fuse: ``path`` (the input) and ``name`` (its output, relative to DIR)."""

    name: str
    path: Path


def is_bag(path: Path) -> bool:
    """A rosbag2 bag folder (with ``metadata.yaml``) or a bare ``.mcap`` / ``.db3`` file."""
    if path.is_dir():
        return (path / 'metadata.yaml').is_file()
    return path.is_file() and path.suffix in BAG_SUFFIXES


def _bag_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _search(root: Path, skip: Path | None) -> list[BagInput]:
    """Bags under ``root`` (not itself a bag), named by their path relative to it."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            sub = here / d
            if d.startswith('.') or (skip is not None and sub.resolve() == skip):
                continue
            if is_bag(sub):
                found.append(BagInput(sub.relative_to(root).as_posix(), sub))
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = here / f
            if p.suffix in BAG_SUFFIXES and not f.startswith('.'):
                found.append(BagInput(p.relative_to(root).with_suffix('').as_posix(), p))
    return found


def _read_list(path: Path) -> list[BagInput]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f'{path}: cannot read the list of bags ({exc})') from exc
    out = []
    for n, line in enumerate(lines, 1):
        entry = line.split('#', 1)[0].strip()
        if not entry:
            continue
        p = Path(entry).expanduser()
        p = p if p.is_absolute() else path.parent / p
        if not is_bag(p):
            raise InputError(f'{path}:{n}: {entry} is not a rosbag2 bag')
        out.append(BagInput(_bag_name(p), p))
    return out


def _expand(item: str, skip: Path | None) -> list[BagInput]:
    if any(c in item for c in '*?['):
        matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
        out = []
        for m in map(Path, matches):
            if is_bag(m):
                out.append(BagInput(_bag_name(m), m))
            elif m.is_dir() and (skip is None or m.resolve() != skip):
                out.extend(_search(m, skip))
        if not out:
            raise InputError(f'{item}: the pattern matches no bag')
        return out
    p = Path(item).expanduser()
    if is_bag(p):
        return [BagInput(_bag_name(p), p)]
    if p.is_dir():
        return _search(p, skip)
    if p.is_file():
        return _read_list(p)
    raise InputError(f'{item}: no such bag, folder, pattern or list file')


def find_bags(inputs: list[str | os.PathLike], out_dir: str | os.PathLike | None = None
              ) -> list[BagInput]:
    """Every bag the inputs name, each once, with its output name (see the module docstring)
    and its absolute path.

    Raises :class:`InputError` when an input names nothing, when no bag is found at all, when
    two bags share an output name, or when an output and an input overlap (the output folder
    inside an input bag, or an input at or inside some bag's ``out_dir/<name>``, links
    followed).
    """
    skip = Path(out_dir).resolve() if out_dir is not None else None
    bags: list[BagInput] = []
    seen: set[Path] = set()
    for item in inputs:
        for bag in _expand(os.fspath(item), skip):
            real = bag.path.resolve()
            if real not in seen:
                seen.add(real)
                # absolute: workers on other machines do not share this working directory
                bags.append(BagInput(bag.name, bag.path.absolute()))
    if not bags:
        raise InputError('no rosbag2 bag found in ' + ', '.join(map(os.fspath, inputs)))
    by_name: dict[str, BagInput] = {}
    for bag in bags:
        if bag.name.startswith(RESERVED_PREFIX) or bag.name == MANIFEST_NAME:
            raise InputError(f'{bag.path}: the output name {bag.name!r} is reserved; rename '
                             'the bag')
        other = by_name.get(bag.name)
        if other is not None:
            raise InputError(f'two bags would both be written to {bag.name!r}: {other.path} '
                             f'and {bag.path}; fuse them into different --out folders or pass '
                             'their parent folders so their relative paths tell them apart')
        by_name[bag.name] = bag
    if skip is not None:
        check_overlap(bags, skip)
    return bags


def check_overlap(bags: list[BagInput], out_dir: Path) -> None:
    """Refuse an output folder inside an input bag, and an input that an output (its own or
    another bag's ``out_dir/<name>``) would replace. Links are followed, so an output that is
    a link to an input counts as that input. Linear in the number of bags (and path depth)."""
    out_dir = out_dir.resolve()
    targets = {(out_dir / b.name).resolve(): b for b in bags}
    for bag in bags:
        real = bag.path.resolve()
        if real.is_dir() and (out_dir == real or out_dir.is_relative_to(real)):
            raise InputError(f'the output folder {out_dir} is inside the input bag {bag.path}')
        for place in (real, *real.parents):
            owner = targets.get(place)
            if owner is None:
                continue
            whose = 'its output' if owner is bag else f'the output of {owner.path},'
            raise InputError(f'{bag.path}: {whose} {out_dir / owner.name} would overwrite the '
                             'input; choose another --out')

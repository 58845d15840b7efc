"""Before any worker starts: which bags are done, which must be fused, and in what pieces.

:func:`plan` checks each bag against the manifest (a finished output whose options, input and
checksum still match is skipped), reads the metadata of the others (a bag that cannot be read,
lacks a topic, or already has the fused topic fails here, at no cost) and cuts the long ones
into time ranges (:mod:`.ranges`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import uuid

from sgdfuse_ros.ros.bag_io import IMAGE_TYPES, BagError, bag_info
from . import ranges
from .inputs import BagInput
from .manifest import PARTIAL_DIR, Manifest, input_fingerprint, tree_digest
from .options import FuseOptions


@dataclass
class Job:
    """One bag to fuse this run: its ranges (one for a bag fused whole), the records of the
    ranges done so far, and where its output is written before it is renamed into place."""

    bag: BagInput
    fingerprint: dict[str, int]
    ranges: list[ranges.TimeRange]
    expected_pairs: int
    work: Path
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: pairs per range (all but the last), and the ranges handed out so far
    counts: dict[int, int] = field(default_factory=dict)
    released: set = field(default_factory=set)
    attempts: int = 0
    failed: str | None = None
    worker_s: float = 0.0
    window_pairs: int = 0
    fuse_ms: float = 0.0
    hosts: set = field(default_factory=set)
    #: Ray node ids of the workers that fused it
    nodes: set = field(default_factory=set)

    @property
    def split(self) -> bool:
        return len(self.ranges) > 1

    @property
    def tmp(self) -> Path:
        """The finished bag before its rename (named as the output: rosbag2 names the storage
        file after its folder)."""
        return self.work / 'out' / Path(self.bag.name).name


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: (name, reason) of bags that failed before fusion.
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: ``(name, why)`` of finished outputs fused again: ``output changed or missing``,
    #: ``options changed``, ``input changed``.
    redo: list[tuple[str, str]] = field(default_factory=list)


def _image_topic_problem(topics: dict[str, tuple[str, int]], topic: str, role: str) -> str | None:
    if topic not in topics:
        images = sorted(t for t, (k, _) in topics.items() if k in IMAGE_TYPES)
        return (f'no {role} topic {topic!r} in the bag (image topics: '
                f'{", ".join(images) if images else "none"})')
    if topics[topic][0] not in IMAGE_TYPES:
        return f'{role} topic {topic!r} has type {topics[topic][0]}; expected an image'
    return None


def _verified(out_dir: Path, manifest: Manifest, names: list[str]) -> dict[str, bool]:
    """Whether each finished output is still what the manifest recorded (size, then SHA-256;
    hashed on a few threads, hashlib releases the GIL)."""
    def check(name: str) -> bool:
        entry, path = manifest.get(name), out_dir / name
        if not path.is_dir():
            return False
        try:
            digest, size = tree_digest(path)
        except OSError:
            return False
        return size == entry.get('bytes') and digest == entry.get('sha256')

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(check, names)))


def plan(found: list[BagInput], out_dir: Path, manifest: Manifest, options: FuseOptions, *,
         chunk_s: float, margin_s: float | None, overwrite: bool = False) -> Plan:
    """Sort the bags into skipped, failed and jobs (see the module docstring). Failures are
    recorded in the manifest; verified ``finishing`` entries are promoted to ``done``. An
    existing ``out_dir/<name>`` that the manifest did not write fails its bag unless
    ``overwrite`` (then it is replaced when the bag's new output is ready)."""
    key = options.key()
    result = Plan()
    stats = {b.name: input_fingerprint(b.path) for b in found}
    why = {b.name: manifest.stale(b.name, key, stats[b.name]) for b in found}
    ok = _verified(out_dir, manifest, [n for n, w in why.items() if w is None])
    partial = out_dir / PARTIAL_DIR
    for bag in found:
        name = bag.name
        if ok.get(name):
            entry = manifest.get(name)
            if entry['state'] != 'done':
                manifest.set(name, dict(entry, state='done'), save=False)
            result.skipped.append(name)
            continue
        if name in ok:
            result.redo.append((name, 'output changed or missing'))
        elif why[name] != 'not finished':
            result.redo.append((name, why[name]))
        problem = None
        ours = (manifest.get(name) or {}).get('sha256')  # only finished outputs are ours
        target = out_dir / name
        if (target.exists() or target.is_symlink()) and not ours and not overwrite:
            problem = (f'{target} exists and is not an output of this manifest; pass '
                       '--overwrite to replace it, move it away or choose another --out')
        info = None
        if problem is None:
            try:
                info = bag_info(bag.path)
            except BagError as exc:
                problem = str(exc)
        if info is not None:
            topics = info['topics']
            problem = (_image_topic_problem(topics, options.thermal_topic, 'thermal')
                       or _image_topic_problem(topics, options.rgb_topic, 'RGB'))
            if problem is None and not options.only_fused and options.fused_topic in topics:
                problem = (f'the bag already has a {options.fused_topic!r} topic; choose '
                           'another --fused-topic or --only-fused')
            if problem is None and info['message_count'] == 0:
                problem = 'the bag is empty'
        if problem is not None:
            prev = manifest.get(name) or {}
            manifest.set(name, {'state': 'failed', 'input': str(bag.path), 'reason': problem,
                                'attempts': int(prev.get('attempts', 0)) + 1,
                                'options_key': key}, save=False)
            result.failed.append((name, problem))
            continue
        counts = info['topics']
        n_rgb = counts[options.rgb_topic][1]
        duration = info['duration_s']
        rate = n_rgb / duration if duration > 0 else 0.0
        margin = margin_s if margin_s is not None else ranges.auto_margin(
            rate, slop=options.slop, queue_size=options.queue_size,
            smoothing=options.pipeline.thermal_smoothing, mask_rate=options.mask_rate)
        tail = ranges.tail_margin(rate, slop=options.slop, queue_size=options.queue_size)
        rngs = ranges.plan_ranges(info['start_ns'], duration, chunk_s=chunk_s, margin_s=margin,
                                  tail_s=tail)
        result.jobs.append(Job(bag=bag, fingerprint=stats[name], ranges=rngs,
                               expected_pairs=min(n_rgb, counts[options.thermal_topic][1]),
                               work=partial / uuid.uuid4().hex[:12]))
    manifest.save()
    # Longest work first: the ranges of split bags, then whole bags by size.
    result.jobs.sort(key=lambda j: (not j.split, -j.fingerprint['bytes']))
    return result

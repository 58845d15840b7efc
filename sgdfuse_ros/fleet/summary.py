"""What a fleet run did: bags fused, skipped and failed, pairs, unmatched frames, throughput."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def human_bytes(n: float) -> str:
    for unit in ('B', 'kB', 'MB', 'GB', 'TB'):
        if abs(n) < 1000 or unit == 'TB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1000.0
    return f'{n:.1f} TB'


@dataclass
class FleetSummary:
    """The outcome of :func:`~.run.fuse_many`. Pair and frame counts cover the bags fused in
    this run; ``output_bytes`` covers every finished output of the inputs (skipped ones too)."""

    out_dir: str
    manifest: str
    bags: int = 0
    fused: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: ``(name, reason)``: bags with no output this run; a re-run retries them.
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: ``(name, why)``: finished outputs fused again (output changed or missing, options
    #: changed, input changed)
    redone: list[tuple[str, str]] = field(default_factory=list)
    pairs_matched: int = 0
    pairs_fused: int = 0
    #: matched pairs that could not be fused, inside bags that were written
    pair_failures: int = 0
    bags_with_pair_failures: list[str] = field(default_factory=list)
    #: frames left without a partner, per topic
    unmatched: dict[str, int] = field(default_factory=dict)
    #: split bags: pairs no range fused, range frames no pair used (both 0 when the margin
    #: covers the pairing's warm-up), ranges whose mask refreshes fell on other frames than
    #: the whole bag's (their frames may differ a little from ``bag fuse``'s)
    boundary_missing: int = 0
    boundary_extra: int = 0
    boundary_misaligned: int = 0
    output_bytes: int = 0
    wall_s: float = 0.0
    #: Ray start (or join) and workers ready (weights loaded)
    startup_s: float = 0.0
    #: stopping the workers and disconnecting (stopping a local instance)
    shutdown_s: float = 0.0
    workers: int = 0
    nodes: int = 0
    method: str = ''
    #: worker seconds inside tasks, and of those, seconds in the fusion method itself
    worker_s: float = 0.0
    fuse_s: float = 0.0
    #: pairs fused in range margins (work done twice, the price of splitting)
    margin_pairs: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pair_failures

    @property
    def pairs_per_second(self) -> float:
        """Pairs fused per second of the whole run, start-up included."""
        return self.pairs_fused / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d['failed'] = [list(f) for f in self.failed]
        d['redone'] = [list(f) for f in self.redone]
        d['pairs_per_second'] = self.pairs_per_second
        d['ok'] = self.ok
        return d

    def format(self) -> str:
        lines = [f'fused {len(self.fused)} of {self.bags} bag(s) into {self.out_dir}'
                 + (f' ({len(self.skipped)} already done, skipped)' if self.skipped else '')
                 + (f'; {len(self.failed)} FAILED' if self.failed else '')]
        if self.fused:
            lines.append(f'pairs: {self.pairs_fused} fused of {self.pairs_matched} matched in '
                         f'{self.wall_s:.1f} s = {self.pairs_per_second:.1f} pairs/s on '
                         f'{self.workers} worker(s), {self.nodes} node(s), method '
                         f'{self.method} (start-up {self.startup_s:.1f} s)')
            busy = (f'workers busy {self.worker_s:.1f} s, {self.fuse_s:.1f} s of it fusing'
                    + (f'; {self.margin_pairs} pair(s) fused twice in range margins'
                       if self.margin_pairs else ''))
            lines.append(busy)
            for topic, n in self.unmatched.items():
                lines.append(f'  {topic}: {n} frame(s) left unmatched')
        if self.redone:
            whys: dict[str, int] = {}
            for _, why in self.redone:
                whys[why] = whys.get(why, 0) + 1
            lines.append(f'fused again: {len(self.redone)} finished bag(s) ('
                         + ', '.join(f'{why}: {n}' for why, n in whys.items()) + ')')
        if self.boundary_missing or self.boundary_extra:
            lines.append(f'range boundaries: {self.boundary_missing} pair(s) fused by no range, '
                         f'{self.boundary_extra} range frame(s) unused; widen --margin')
        if self.boundary_misaligned:
            lines.append(f'range boundaries: {self.boundary_misaligned} range(s) refreshed their '
                         'masks on other frames than the whole bag (pairs the whole bag could '
                         'not fuse, or a margin too short): their frames may differ a little '
                         "from bag fuse's")
        if self.pair_failures:
            lines.append(f'{self.pair_failures} matched pair(s) NOT fused in '
                         f'{len(self.bags_with_pair_failures)} bag(s): '
                         + ', '.join(self.bags_with_pair_failures[:10])
                         + ' (reasons in the manifest)')
        lines.append(f'output: {human_bytes(self.output_bytes)} in '
                     f'{len(self.fused) + len(self.skipped)} bag(s); manifest {self.manifest}')
        if self.failed:
            lines.append(f'{len(self.failed)} bag(s) FAILED (a re-run retries them):')
            for name, why in self.failed[:20]:
                lines.append(f'  {name}: {why}')
            if len(self.failed) > 20:
                lines.append(f'  ... and {len(self.failed) - 20} more (see the manifest)')
        return '\n'.join(lines)

"""How a bag fused in time ranges differs from the same bag fused whole, by margin.

For each method and margin: a sample bag is fused whole with ``fuse_bag`` and in ranges with
:mod:`sgdfuse_ros.fleet.ranges` (the code ``sgdfuse bag fuse-many`` runs in its workers: pair
counts, ranges started on the whole bag's mask refreshes, assembly), both with the same
pipeline on one thread; then the two outputs are compared frame by frame: pairs (RGB stamps, in
order, and each range's thermal partner of every RGB frame), and pixels. For methods with masks
one more row fuses the ranges at the default margin without lining their mask refreshes up
(each range counting its frames from its window's start), to show what the lining up is for.
Prints a Markdown table (docs/benchmarks.md, "Fleet fusion on Ray").

    PYTHONPATH=. python docs/fleet_boundaries.py [--frames 800] [--size 320x240] [--chunk 20]
"""

import argparse
from pathlib import Path
import shutil
import tempfile

import numpy as np

from sgdfuse_ros.fleet import FuseOptions, ranges
from sgdfuse_ros.fleet.manifest import tree_digest
from sgdfuse_ros.fleet.schedule import RangePipeline
from sgdfuse_ros.fusion.pipeline import PipelineConfig
from sgdfuse_ros.params import DEFAULTS
from sgdfuse_ros.ros.bag_fuse import fuse_bag
from sgdfuse_ros.ros.bag_io import bag_info, read_messages, stamp_ns
from sgdfuse_ros.ros.sample_bag import make_sample_bag
from sgdfuse_ros.runtime import set_threads


class Recording(RangePipeline):
    """A worker's pipeline, recording the thermal frame given with each pair."""

    def __init__(self, config):
        super().__init__(config)
        self.pairs = {}

    def fuse(self, thermal, visible, **kw):
        self.pairs[kw['name']] = hash(thermal.tobytes())
        return super().fuse(thermal, visible, **kw)


def frames(path):
    return [(stamp_ns(m), np.frombuffer(bytes(m.data), np.uint8).astype(np.int16))
            for _, _, m in read_messages(path, DEFAULTS['fused_topic'])]


def split(src, out, work, rngs, pipe, kw, *, line_up: bool):
    """The ranges fused and assembled as a fleet run does; ``line_up=False``: every range
    fused from its window's start, its mask refreshes not lined up with the whole bag's."""
    if line_up:
        _, check, _ = ranges.fuse_in_ranges(src, out, work, rngs, pipeline=pipe, kwargs=kw)
        return check
    recs = []
    for r in rngs:
        pipe.gain.reset()
        recs.append(ranges.fuse_range(src, work, r, pipeline=pipe, kwargs=kw))
    _, check = ranges.assemble(src, out, rngs, recs, kwargs=kw, method=pipe.method_name)
    return check


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--frames', type=int, default=800)
    p.add_argument('--size', default='320x240')
    p.add_argument('--chunk', type=float, default=20.0)
    p.add_argument('--methods', nargs='+', default=['laplacian', 'sgdfuse'])
    p.add_argument('--margins', type=float, nargs='+', default=[1.0, 3.0, 6.0, 15.0],
                   help='margins besides the default one (always measured)')
    a = p.parse_args()
    set_threads(1)  # both runs on one thread: the same arithmetic whatever the machine
    work = Path(tempfile.mkdtemp(prefix='fleet-boundaries-'))
    try:
        src = work / 'in'
        make_sample_bag(src, frames=a.frames, visible_size=a.size, progress=False)
        info = bag_info(src)
        opts = FuseOptions()
        default = ranges.auto_margin(10.0, slop=opts.slop, queue_size=opts.queue_size,
                                     smoothing=opts.pipeline.thermal_smoothing,
                                     mask_rate=opts.mask_rate)
        print(f'{a.frames} frames at {a.size}, 10 Hz, ranges of {a.chunk:g} s; default margin '
              f'{default:.1f} s; a frame "differs" when any of its bytes does')
        print('\n| method | margin s | ranges | masks lined up | same pairs | frames differing '
              '| max abs diff | pixels differing (of all) | output identical |')
        print('|---|---|---|---|---|---|---|---|---|')
        for method in a.methods:
            opts = FuseOptions(pipeline=PipelineConfig(method=method))
            kw = opts.bag_kwargs()
            ref_pipe = Recording(opts.pipeline_config())
            fuse_bag(src, work / 'whole' / 'out', pipeline=ref_pipe, progress=False, **kw)
            ref = frames(work / 'whole' / 'out')
            runs = [(m, True) for m in [*a.margins, default]]
            if ref_pipe.method.uses_masks:
                runs.append((default, False))
            for margin, line_up in runs:
                pipe = Recording(opts.pipeline_config())
                rngs = ranges.plan_ranges(info['start_ns'], info['duration_s'],
                                          chunk_s=a.chunk, margin_s=margin, tail_s=1.2)
                out = work / 'split' / 'out'
                check = split(src, out, work / 'w', rngs, pipe, kw, line_up=line_up)
                got = frames(out)
                same_pairs = ([s for s, _ in got] == [s for s, _ in ref]
                              and check['missing'] == check['extra'] == 0
                              and all(ref_pipe.pairs[n] == h for n, h in pipe.pairs.items()))
                diffs = [np.abs(x - y) for (_, x), (_, y) in zip(ref, got)]
                differing = sum(1 for d in diffs if d.any())
                worst = max(int(d.max()) for d in diffs)
                pixels = sum(int((d > 0).sum()) for d in diffs) / sum(d.size for d in diffs)
                identical = tree_digest(out) == tree_digest(work / 'whole' / 'out')
                masks = '-' if not ref_pipe.method.uses_masks else (
                    'yes' if check['misaligned'] == 0 else
                    f'no ({check["misaligned"]} of {len(rngs)} ranges)')
                print(f'| `{method}` | {margin:.3g} | {len(rngs)} | {masks} | '
                      f'{"yes" if same_pairs else "NO"} | {differing} of {len(ref)} | {worst} | '
                      f'{pixels:.2e} | {"yes" if identical else "no"} |', flush=True)
                shutil.rmtree(out.parent)
                shutil.rmtree(work / 'w')
            shutil.rmtree(work / 'whole')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()

"""How a bag fused in time ranges differs from the same bag fused whole, by margin.

For each method and margin: a sample bag is fused whole with ``fuse_bag`` and in ranges with
:mod:`sgdfuse_ros.fleet.ranges` (the code ``sgdfuse bag fuse-many`` runs in its workers), both
with the same pipeline and threads; then the two outputs are compared frame by frame: pairs
(RGB stamps, in order, and each range's thermal partner of every RGB frame), and pixels.
Prints a Markdown table (docs/benchmarks.md, "Fleet fusion on Ray").

    PYTHONPATH=. python docs/fleet_boundaries.py [--frames 400] [--size 320x240]
"""

import argparse
from pathlib import Path
import shutil
import tempfile

import numpy as np

from sgdfuse_ros.fleet import FuseOptions, ranges
from sgdfuse_ros.fleet.manifest import tree_digest
from sgdfuse_ros.fusion.pipeline import FusionPipeline, PipelineConfig
from sgdfuse_ros.ros import bags


class Recording(FusionPipeline):
    """The pipeline, recording the thermal frame given with each pair."""

    def __init__(self, config):
        super().__init__(config)
        self.pairs = {}

    def fuse(self, thermal, visible, **kw):
        self.pairs[kw['name']] = hash(thermal.tobytes())
        return super().fuse(thermal, visible, **kw)


def frames(path):
    return [(bags.stamp_ns(m), np.frombuffer(bytes(m.data), np.uint8).astype(np.int16))
            for _, _, m in bags.read_messages(path, bags.DEFAULT_FUSED_TOPIC)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--frames', type=int, default=400)
    p.add_argument('--size', default='320x240')
    p.add_argument('--chunk', type=float, default=10.0)
    p.add_argument('--methods', nargs='+', default=['laplacian', 'sgdfuse'])
    p.add_argument('--margins', type=float, nargs='+', default=[1.0, 3.0, 6.0, 15.0, 34.9])
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix='fleet-boundaries-'))
    try:
        src = work / 'in'
        bags.make_sample_bag(src, frames=a.frames, visible_size=a.size, progress=False)
        info = bags.bag_info(src)
        print(f'{a.frames} frames at {a.size}, 10 Hz, ranges of {a.chunk:g} s; a frame '
              '"differs" when any of its bytes does')
        print('\n| method | margin s | ranges | same pairs | frames differing | max abs diff '
              '| pixels differing (of all) | output identical |')
        print('|---|---|---|---|---|---|---|---|')
        for method in a.methods:
            opts = FuseOptions(pipeline=PipelineConfig(method=method))
            kw = opts.bag_kwargs()
            ref_pipe = Recording(opts.pipeline_config(1))
            bags.fuse_bag(src, work / 'whole' / 'out', pipeline=ref_pipe, progress=False, **kw)
            ref = frames(work / 'whole' / 'out')
            for margin in a.margins:
                pipe = Recording(opts.pipeline_config(1))
                rngs = ranges.plan_ranges(info['start_ns'], info['duration_s'],
                                          chunk_s=a.chunk, margin_s=margin, tail_s=1.2)
                recs = []
                for r in rngs:
                    pipe.gain.reset()
                    recs.append(ranges.fuse_range(src, work / 'w', r, pipeline=pipe, kwargs=kw))
                out = work / f'split{margin}' / 'out'
                _, check = ranges.assemble(src, out, rngs, recs, kwargs=kw,
                                           method=pipe.method_name)
                got = frames(out)
                same_pairs = ([s for s, _ in got] == [s for s, _ in ref]
                              and check == {'missing': 0, 'extra': 0}
                              and all(ref_pipe.pairs[n] == h for n, h in pipe.pairs.items()))
                diffs = [np.abs(x - y) for (_, x), (_, y) in zip(ref, got)]
                differing = sum(1 for d in diffs if d.any())
                worst = max(int(d.max()) for d in diffs)
                pixels = sum(int((d > 0).sum()) for d in diffs) / sum(d.size for d in diffs)
                identical = tree_digest(out) == tree_digest(work / 'whole' / 'out')
                print(f'| `{method}` | {margin:g} | {len(rngs)} | {"yes" if same_pairs else "NO"}'
                      f' | {differing} of {len(ref)} | {worst} | {pixels:.2e} | '
                      f'{"yes" if identical else "no"} |')
                shutil.rmtree(out.parent)
                shutil.rmtree(work / 'w')
            shutil.rmtree(work / 'whole')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()

"""The worker of a fleet run: one fusion pipeline, many bags.

:class:`FuseWorker` is a plain class; :func:`~.run.fuse_many` makes it a Ray actor (one per
worker slot), so the networks load once per worker process, not once per bag. It runs four
kinds of task (plain dicts, built by the driver):

``bag``       fuse a whole bag into a temporary folder
              (:func:`~sgdfuse_ros.ros.bag_fuse.fuse_bag`);
``count``     count the pairs of one time range of a long bag, stamps only
              (:func:`.schedule.count_range_pairs`);
``range``     fuse one time range of a long bag (:func:`.ranges.fuse_range`), given the pair
              counts of the ranges before it;
``assemble``  write a long bag's output from its ranges (:func:`.ranges.assemble`).

``bag`` and ``assemble`` tasks also compute the output's checksum, so the driver only renames
the finished folder into place. Every task starts with a fresh thermal gain, so a bag's output
never depends on which bag the worker fused before it. A task returns a JSON-ready record; a
bag that cannot be fused is a record with ``error`` set, never an exception.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import socket
import threading
import time
from typing import Any

from sgdfuse_ros.ros.bag_fuse import fuse_bag
from sgdfuse_ros.ros.bag_io import BagError
from . import ranges
from .manifest import tree_digest
from .options import FuseOptions
from .schedule import RangePipeline


def _summary_record(summary) -> dict[str, Any]:
    d = summary.as_dict()
    d['unmatched_total'] = {t: int(sum(r.values())) for t, r in summary.unmatched.items()}
    return d


class FuseWorker:
    """Holds one :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline` and runs tasks with it.

    ``threads``: CPU threads of the networks (and OpenCV), normally the CPUs Ray gave the
    worker. A pipeline that cannot be built is reported by :meth:`ready` (the driver then
    retires the worker) rather than raised, so Ray does not restart it in a loop.
    """

    def __init__(self, options: FuseOptions, threads: int = 1):
        self.options = options
        self.error: str | None = None
        self.pipeline: RangePipeline | None = None
        self._task: str | None = None
        self._lock = threading.Lock()
        self.node: str | None = None
        try:
            import cv2

            from sgdfuse_ros.runtime import set_threads

            # The worker owns its process: the networks' threads are set once, here.
            cv2.setNumThreads(max(1, int(threads)))
            set_threads(max(1, int(threads)))
            self.pipeline = RangePipeline(options.pipeline_config())
        except Exception as exc:  # noqa: BLE001 - reported by ready()
            self.error = f'cannot build the fusion pipeline: {type(exc).__name__}: {exc}'

    def ready(self) -> dict[str, Any]:
        """Where the worker runs, its method, or why it cannot work."""
        try:
            import ray

            self.node = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - not inside Ray
            pass
        return {'pid': os.getpid(), 'host': socket.gethostname(), 'node': self.node,
                'method': self.pipeline.method_name if self.pipeline is not None else None,
                'error': self.error}

    def progress(self) -> tuple[str | None, int]:
        """The running task's id and the pairs it fused so far."""
        with self._lock:
            task = self._task
        return task, (self.pipeline.count if task is not None else 0)

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        """Run one task (see the module docstring); returns its record."""
        if self.pipeline is None:
            return {'id': task['id'], 'error': self.error}
        self.pipeline.gain.reset()
        self.pipeline.count = 0
        with self._lock:
            self._task = task['id']
        t0 = time.perf_counter()
        rec: dict[str, Any] = {'id': task['id'], 'kind': task['kind'], 'error': None,
                               'pid': os.getpid(), 'host': socket.gethostname(),
                               'node': self.node}
        try:
            rec.update(self._run(task))
        except BagError as exc:
            rec['error'] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bad bag must not take the worker down
            rec['error'] = f'{type(exc).__name__}: {exc}'
        finally:
            with self._lock:
                self._task = None
        rec['elapsed_s'] = time.perf_counter() - t0
        rec['pairs'] = self.pipeline.count
        return rec

    def _run(self, task: dict[str, Any]) -> dict[str, Any]:
        kwargs = self.options.bag_kwargs()
        kind = task['kind']
        if kind == 'count':
            rng = ranges.TimeRange(**task['range'])
            return {'count': {'index': rng.index,
                              'pairs': ranges.count_pairs(task['input'], rng, kwargs=kwargs)}}
        if kind == 'range':
            rng = ranges.TimeRange(**task['range'])
            return {'range': ranges.fuse_range(task['input'], task['work'], rng,
                                               pipeline=self.pipeline, kwargs=kwargs,
                                               first_index=task['first_index'])}
        out = Path(task['tmp'])
        _clear(out)
        try:
            if kind == 'bag':
                summary = fuse_bag(task['input'], out, pipeline=self.pipeline,
                                   progress=False, **kwargs)
                check = {'missing': 0, 'extra': 0, 'misaligned': 0}
            elif kind == 'assemble':
                rngs = [ranges.TimeRange(**r) for r in task['ranges']]
                summary, check = ranges.assemble(task['input'], out, rngs, task['records'],
                                                 kwargs=kwargs, method=self.pipeline.method_name)
            else:
                raise ValueError(f'unknown task kind {kind!r}')
            digest, size = tree_digest(out)
        except BaseException:
            _clear(out)
            raise
        return {'summary': _summary_record(summary), 'sha256': digest, 'bytes': size,
                'boundary': check, 'tmp': str(out)}


def _clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()

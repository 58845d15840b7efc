"""The driver of a fleet run: plan, start or join Ray, hand tasks to workers, record results.

Each worker is a Ray actor (:class:`.worker.FuseWorker`) holding one pipeline; the driver gives
each ready worker one task at a time, whole bags and time ranges of long bags, longest first,
and a long bag's assembly as soon as its last range is in. Finished outputs are renamed from
``DIR/.sgdfuse-partial`` into ``DIR/<name>`` by the driver only, after the manifest has their
checksum, so a bag in ``DIR`` is always complete.

A worker that dies (killed, out of memory, its node lost) is restarted by Ray; the task it held
is tried again up to ``retries`` times, then its bag is recorded as failed and the run goes on.
A bag that cannot be fused (a corrupt file, missing topics) fails at once: trying again would
fail again. The next run retries every failed bag.
"""

from __future__ import annotations

from collections import deque
import importlib.util
import logging
import os
from pathlib import Path
import shutil
import sys
import time
from typing import Any, Callable

from sgdfuse_ros.core.interrupts import keep_sigterm
from .inputs import find_bags
from .manifest import MANIFEST_NAME, PARTIAL_DIR, Manifest, locked
from .options import FuseOptions
from .plan import Job, plan
from .summary import FleetSummary
from .worker import FuseWorker

RAY_HINT = ('bag fuse-many needs Ray, which is not installed here: pip install '
            '"sgdfuse_ros[cluster]" (or: pip install "ray==2.60.0")')
#: Object store of a local instance: results are small records, frames never pass through it.
LOCAL_OBJECT_STORE = 200 * 1024 * 1024
#: Seconds to wait for a first worker (its node may still be starting on an autoscaler).
READY_TIMEOUT_S = 300.0
#: Restarts of one worker process by Ray (each death also costs its task one attempt).
MAX_RESTARTS = 4
POLL_S = 0.5
_LOCAL_ONLY = 'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'


class FleetError(RuntimeError):
    """The run cannot proceed: no Ray, no cluster at the address, no worker could start."""


def ray_available() -> bool:
    """Whether Ray is installed (without importing it)."""
    return importlib.util.find_spec('ray') is not None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _connect(address: str | None) -> Callable[[], None]:
    """Start a local Ray instance sized to this machine (address None) or join the cluster at
    ``address``; returns the function that disconnects (and stops a local instance)."""
    restore = None
    if address is None:
        # A local instance serves this machine only: its servers should listen on loopback.
        # Ray 2.60 does that when it believes no multi-node cluster is wanted, a switch read
        # from the environment when ray is first imported (and by the processes it starts);
        # otherwise it binds them to every interface. (A process that imported ray before,
        # without the switch, gets Ray's default.)
        restore = os.environ.get(_LOCAL_ONLY)
        os.environ[_LOCAL_ONLY] = '0'
    import ray

    # ray.init makes SIGTERM exit with a stack dump; the caller's handling (SIGTERM as Ctrl-C:
    # interrupted, resumable) stays in effect instead.
    with keep_sigterm():
        if address is None:
            ray.init(num_cpus=_cores(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, object_store_memory=LOCAL_OBJECT_STORE)
        else:
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise FleetError(f'cannot join the Ray cluster at {address}: '
                                 f'{str(exc).splitlines()[0]}') from exc

    def disconnect() -> None:
        ray.shutdown()
        if address is None:
            if restore is None:
                os.environ.pop(_LOCAL_ONLY, None)
            else:
                os.environ[_LOCAL_ONLY] = restore
    return disconnect


class _Bar:
    """One tqdm bar of pairs for the whole cluster, bags done/failed in its postfix."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, desc='fuse-many', unit='pair', file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def show(self, pairs: int, done: int, failed: int, todo: int) -> None:
        if self.bar is None:
            return
        self.bar.n = pairs
        self.bar.set_postfix(bags=f'{done}/{todo}', failed=failed, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _short(exc: BaseException) -> str:
    """The first sentence of an exception, after its type."""
    text = str(exc).strip().split('\n')[0].split('. ')[0]
    return f'{type(exc).__name__}: {text}'.rstrip(': ')


class _Run:
    """State of the scheduling loop (see the module docstring)."""

    def __init__(self, out_dir: Path, manifest: Manifest, options: FuseOptions,
                 jobs: list[Job], summary: FleetSummary, retries: int):
        self.out_dir, self.manifest, self.options = out_dir, manifest, options
        self.jobs = {j.bag.name: j for j in jobs}
        self.summary, self.retries = summary, retries
        self.key = options.key()
        self.queue: deque[dict[str, Any]] = deque()
        for job in jobs:
            self.queue.extend(self._tasks(job))
        self.finished_pairs = 0
        self.live: dict[str, int] = {}
        self.method = ''

    def _tasks(self, job: Job) -> list[dict[str, Any]]:
        """A whole bag's task; for a split bag the pair counts of its ranges (all but the
        last) and its first range, the others follow as the counts come in."""
        base = {'name': job.bag.name, 'input': str(job.bag.path)}
        if not job.split:
            return [dict(base, id=f'{job.bag.name}#bag', kind='bag', tmp=str(job.tmp))]
        counts = [dict(base, id=f'{job.bag.name}#count{r.index}', kind='count', range=vars(r))
                  for r in job.ranges[:-1]]
        return counts + self._release(job)

    def _release(self, job: Job) -> list[dict[str, Any]]:
        """The range tasks of ``job`` whose first pair's index in the whole bag is now known
        (the counts of every range before them are in)."""
        out = []
        for r in job.ranges:
            if r.index in job.released:
                continue
            if any(i not in job.counts for i in range(r.index)):
                break
            job.released.add(r.index)
            out.append({'name': job.bag.name, 'input': str(job.bag.path), 'kind': 'range',
                        'id': f'{job.bag.name}#range{r.index}', 'work': str(job.work),
                        'range': vars(r), 'first_index': sum(job.counts[i]
                                                             for i in range(r.index))})
        return out

    @property
    def open_bags(self) -> int:
        return sum(1 for j in self.jobs.values() if j.failed is None and
                   j.bag.name not in self.summary.fused)

    def pairs(self) -> int:
        return self.finished_pairs + sum(self.live.values())

    def retry(self, task: dict[str, Any], why: str) -> None:
        """A task whose worker died: again (first in line), or its bag fails."""
        job = self.jobs[task['name']]
        if job.failed is not None:
            return
        job.attempts += 1
        if job.attempts <= self.retries:
            self.queue.appendleft(task)
        else:
            self.fail(job, why)

    def fail(self, job: Job, why: str) -> None:
        job.failed = why
        self.queue = deque(t for t in self.queue if t['name'] != job.bag.name)
        prev = self.manifest.get(job.bag.name) or {}
        self.manifest.set(job.bag.name, {'state': 'failed', 'input': str(job.bag.path),
                                         'reason': why, 'options_key': self.key,
                                         'attempts': int(prev.get('attempts', 0)) + 1})
        self.summary.failed.append((job.bag.name, why))
        shutil.rmtree(job.work, ignore_errors=True)

    def result(self, task: dict[str, Any], rec: dict[str, Any]) -> None:
        job = self.jobs[task['name']]
        self.live.pop(task['id'], None)
        if job.failed is not None:
            return
        job.worker_s += rec.get('elapsed_s', 0.0)
        if rec.get('host'):
            job.hosts.add(rec['host'])
        if rec.get('node'):
            job.nodes.add(rec['node'])
        if rec.get('error'):
            self.fail(job, rec['error'])
            return
        if rec['kind'] == 'count':
            c = rec['count']
            job.counts[c['index']] = c['pairs']
            self.queue.extendleft(reversed(self._release(job)))  # ranges first, in order
            return
        if rec['kind'] == 'range':
            r = rec['range']
            job.records[r['index']] = r
            job.window_pairs += r['window_pairs']
            job.fuse_ms += r['fuse_ms']
            self.finished_pairs += r['kept']
            if len(job.records) == len(job.ranges):
                self.queue.appendleft({
                    'id': f'{job.bag.name}#assemble', 'kind': 'assemble', 'name': job.bag.name,
                    'input': str(job.bag.path), 'tmp': str(job.tmp),
                    'ranges': [vars(x) for x in job.ranges],
                    'records': [job.records[x.index] for x in job.ranges]})
            return
        s = rec['summary']
        if rec['kind'] == 'bag':
            self.finished_pairs += s['pairs_fused']
            job.window_pairs += s['pairs_fused']
            job.fuse_ms += (s['fuse_ms_mean'] or 0.0) * s['pairs_fused']
        try:
            self.finish(job, rec)
        except OSError as exc:  # the output cannot be moved into place (disk, permissions)
            self.fail(job, f'cannot move the output into {self.out_dir}: {exc}')

    def finish(self, job: Job, rec: dict[str, Any]) -> None:
        """Record the bag (``finishing``), rename its output into place, record it ``done``."""
        s, name = rec['summary'], job.bag.name
        entry = {'state': 'finishing', 'input': str(job.bag.path), 'input_stat': job.fingerprint,
                 'options_key': self.key, 'method': s['method'], 'storage': s['storage'],
                 'sha256': rec['sha256'], 'bytes': rec['bytes'],
                 'pairs_matched': s['pairs_matched'], 'pairs_fused': s['pairs_fused'],
                 'failed_pairs': len(s['failures']), 'failures': s['failures'][:20],
                 'received': s['received'], 'unmatched': s['unmatched_total'],
                 'unmatched_reasons': {t: {k: v for k, v in r.items() if v}
                                       for t, r in s['unmatched'].items()},
                 'ranges': len(job.ranges),
                 'boundary': rec['boundary'], 'worker_s': round(job.worker_s, 3),
                 'fuse_s': round(job.fuse_ms / 1e3, 3), 'window_pairs': job.window_pairs,
                 'hosts': sorted(job.hosts), 'nodes': sorted(job.nodes),
                 'attempts': job.attempts + 1}
        self.manifest.set(name, entry)
        dst = self.out_dir / name
        _remove(dst)  # an older output, or one the plan let --overwrite replace
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(rec['tmp'], dst)
        self.manifest.set(name, dict(entry, state='done'))
        shutil.rmtree(job.work, ignore_errors=True)
        self.method = s['method']
        sm = self.summary
        sm.fused.append(name)
        sm.pairs_matched += s['pairs_matched']
        sm.pairs_fused += s['pairs_fused']
        if s['failures']:
            sm.pair_failures += len(s['failures'])
            sm.bags_with_pair_failures.append(name)
        for topic, n in s['unmatched_total'].items():
            sm.unmatched[topic] = sm.unmatched.get(topic, 0) + n
        sm.boundary_missing += rec['boundary']['missing']
        sm.boundary_extra += rec['boundary']['extra']
        sm.boundary_misaligned += rec['boundary'].get('misaligned', 0)
        sm.worker_s += job.worker_s
        sm.fuse_s += job.fuse_ms / 1e3
        if job.split:
            sm.margin_pairs += job.window_pairs - s['pairs_fused']


def _remove(path: Path) -> None:
    """Remove an output about to be replaced: a folder, or a file or link (not followed)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _schedule(run: _Run, *, workers: int | None, cpus_per_worker: float, bar: _Bar,
              started: float) -> None:
    """The scheduling loop (Ray connected since ``started``, a monotonic time)."""
    import ray
    from ray.exceptions import RayActorError, RayError

    capacity = int(ray.cluster_resources().get('CPU', 0) // cpus_per_worker)
    n = workers or max(1, capacity)
    threads = max(1, int(cpus_per_worker))
    cls = ray.remote(FuseWorker)
    actors = [cls.options(num_cpus=cpus_per_worker, max_restarts=MAX_RESTARTS,
                          max_task_retries=0, max_concurrency=2,
                          scheduling_strategy='SPREAD').remote(run.options, threads)
              for _ in range(n)]
    waiting = {a.ready.remote(): a for a in actors}
    idle: list = []
    running: dict[Any, tuple[Any, dict[str, Any]]] = {}
    ever_ready, errors, nodes, started_workers = False, [], set(), set()
    t_ready = time.monotonic()
    last_poll = 0.0
    todo = len(run.jobs)
    while run.queue or running:
        while idle and run.queue:
            actor, task = idle.pop(), run.queue.popleft()
            running[actor.run.remote(task)] = (actor, task)
        if not running and not waiting:
            raise FleetError('no worker left: ' + (errors[0] if errors else 'all died'))
        if not ever_ready and time.monotonic() - t_ready > READY_TIMEOUT_S:
            raise FleetError(f'no worker started within {READY_TIMEOUT_S:.0f} s (not enough '
                             'free CPUs in the cluster?)')
        refs = list(running) + list(waiting)
        ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_S)
        if ready:
            more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            ready = list(dict.fromkeys(ready + more))
        for ref in ready:
            if ref in waiting:
                actor = waiting.pop(ref)
                try:
                    info = ray.get(ref)
                except RayError as exc:  # gone for good (restarts used up)
                    errors.append(_short(exc))
                    continue
                if info['error']:
                    errors.append(info['error'])
                    ray.kill(actor, no_restart=True)
                    continue
                if not ever_ready:
                    run.summary.startup_s = time.monotonic() - started
                ever_ready = True
                nodes.add(info['node'])
                started_workers.add(info['pid'])
                idle.append(actor)
                continue
            actor, task = running.pop(ref)
            try:
                rec = ray.get(ref)
            except RayActorError as exc:
                run.live.pop(task['id'], None)
                run.retry(task, f'the worker died while fusing it ({type(exc).__name__})')
                waiting[actor.ready.remote()] = actor  # resolves once Ray restarted it
                continue
            except RayError as exc:  # a Ray failure of the call itself: not worth a retry
                idle.append(actor)
                run.live.pop(task['id'], None)
                run.fail(run.jobs[task['name']], f'the task failed in Ray ({_short(exc)})')
                continue
            idle.append(actor)
            run.result(task, rec)
        now = time.monotonic()
        if now - last_poll >= POLL_S and running:
            last_poll = now
            polls = [actor.progress.remote() for actor, _ in running.values()]
            done, _ = ray.wait(polls, num_returns=len(polls), timeout=0.2)
            for ref in done:
                try:
                    task_id, count = ray.get(ref)
                except RayActorError:
                    continue
                if task_id is not None and any(t['id'] == task_id for _, t in running.values()):
                    run.live[task_id] = count
        bar.show(run.pairs(), len(run.summary.fused), len(run.summary.failed), todo)
    run.summary.workers = len(started_workers)
    run.summary.nodes = len(nodes)
    for actor in actors:
        ray.kill(actor, no_restart=True)


def fuse_many(inputs: list[str | os.PathLike], out_dir: str | os.PathLike,
              options: FuseOptions | None = None, *, address: str | None = None,
              workers: int | None = None, cpus_per_worker: float = 1.0, chunk_s: float = 600.0,
              margin_s: float | None = None, retries: int = 1, overwrite: bool = False,
              progress: bool = True) -> FleetSummary:
    """Fuse every bag of ``inputs`` (see :func:`.inputs.find_bags`) into ``out_dir/<name>``.

    ``address``: None starts a local Ray instance sized to this machine (and stops it at the
    end); ``auto`` or ``HOST:PORT`` joins a running cluster. ``workers``: Ray actors (default:
    the cluster's CPUs / ``cpus_per_worker``), each with ``cpus_per_worker`` CPUs and as many
    network threads. Bags longer than 1.5 x ``chunk_s`` seconds are fused in ranges of about
    ``chunk_s`` (0: never split) with ``margin_s`` seconds of margin (default
    :func:`.ranges.auto_margin`). ``retries``: further attempts of a task whose worker died.
    ``overwrite``: replace an existing ``out_dir/<name>`` that the manifest did not write
    (else that bag fails); an input is never replaced (:func:`.inputs.find_bags` refuses).

    Raises :class:`.inputs.InputError` (bad inputs), :class:`.manifest.ManifestError`
    (unreadable manifest, folder in use), :class:`FleetError` (Ray missing or unreachable, no
    worker could start) and ValueError (bad options); a bag that cannot be fused is a failure
    in the summary, not an exception.
    """
    options = options or FuseOptions()
    options.validate()
    if retries < 0 or cpus_per_worker <= 0 or (workers is not None and workers < 1):
        raise ValueError('retries must be >= 0, cpus per worker > 0 and workers >= 1')
    if chunk_s < 0 or (margin_s is not None and margin_s < 0):
        raise ValueError('chunk and margin must be >= 0 s')
    t0 = time.monotonic()
    out_dir = Path(out_dir).absolute()
    found = find_bags(inputs, out_dir)
    if not ray_available():
        raise FleetError(RAY_HINT)
    with locked(out_dir):
        manifest = Manifest.load(out_dir)
        shutil.rmtree(out_dir / PARTIAL_DIR, ignore_errors=True)  # a killed run's leftovers
        for tmp in out_dir.glob(f'.{MANIFEST_NAME}.*.tmp'):  # see atomic_write_bytes
            tmp.unlink(missing_ok=True)
        p = plan(found, out_dir, manifest, options, chunk_s=chunk_s, margin_s=margin_s,
                 overwrite=overwrite)
        summary = FleetSummary(out_dir=str(out_dir), manifest=str(manifest.path),
                               bags=len(found), skipped=p.skipped, failed=list(p.failed),
                               redone=p.redo)
        run = _Run(out_dir, manifest, options, p.jobs, summary, retries)
        if p.jobs:
            bar = _Bar(sum(j.expected_pairs for j in p.jobs), progress)
            t_connect = time.monotonic()
            disconnect = _connect(address)
            try:
                _schedule(run, workers=workers, cpus_per_worker=cpus_per_worker, bar=bar,
                          started=t_connect)
            finally:
                bar.close()
                t_stop = time.monotonic()
                disconnect()
                summary.shutdown_s = time.monotonic() - t_stop
                shutil.rmtree(out_dir / PARTIAL_DIR, ignore_errors=True)
        summary.method = run.method
        summary.wall_s = time.monotonic() - t0
        summary.output_bytes = sum(int(manifest.get(b.name).get('bytes', 0)) for b in found
                                   if (manifest.get(b.name) or {}).get('state') == 'done')
        manifest.data['runs'].append({
            'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'bags': len(found),
            'fused': len(summary.fused), 'skipped': len(summary.skipped),
            'failed': len(summary.failed), 'pairs_fused': summary.pairs_fused,
            'wall_s': round(summary.wall_s, 3), 'workers': summary.workers,
            'nodes': summary.nodes, 'address': address or 'local'})
        manifest.save()
    return summary

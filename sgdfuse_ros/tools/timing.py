"""What the benchmarks share: the frames they time, and how they summarise and qualify times."""

from __future__ import annotations

import os
from pathlib import Path
import platform
import resource
import statistics
import sys

import numpy as np


def time_stats(values: list[float]) -> dict[str, float] | None:
    """Median, 95th percentile and minimum of a list of times (None for no times)."""
    if not values:
        return None
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(round(0.95 * (len(v) - 1))))]
    return {'median': statistics.median(v), 'p95': p95, 'min': v[0]}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != 'darwin' else kb / 2 ** 20


def load_average() -> float | None:
    """The machine's 1-minute load average: on a shared machine, compare only runs taken under
    similar load."""
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return None


def bench_frames(size: tuple[int, int], task: str = 'ivif'
                 ) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The bundled sample pairs at ``size`` (W, H): ``(mono16 thermal, uint8 RGB visible,
    name)``; the thermal frame is made 16-bit so the percentile gain runs as on a radiometric
    camera. Task ``medical``: the bundled medical pairs, ``(PET/SPECT/CT as read, gray MRI,
    name)``."""
    import cv2

    from sgdfuse_ros.core import imaging
    from sgdfuse_ros.core.paths import MEDICAL_SAMPLES, samples_dir

    if task == 'medical':
        return [(cv2.resize(imaging.read_image(p.ir), size, interpolation=cv2.INTER_AREA),
                 imaging.resize(imaging.read_image(p.vis, gray=True), size),
                 f'{d.name}/{p.name}')
                for d in sorted(MEDICAL_SAMPLES.iterdir()) if imaging.pair_dirs(d)
                for p in imaging.dataset_pairs(d)]

    frames = []
    for pair in imaging.dataset_pairs(samples_dir()):
        ir = imaging.resize(imaging.read_image(pair.ir, gray=True), size)
        vis = cv2.resize(imaging.read_image(pair.vis, gray=False), size,
                         interpolation=cv2.INTER_AREA)
        mono16 = ir.astype(np.uint16) * 40 + 20000  # a radiometric-looking 16-bit frame
        frames.append((mono16, vis, pair.name))
    if not frames:
        raise FileNotFoundError(f'no sample pairs in {samples_dir()}')
    return frames


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), for the machine line of a benchmark."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

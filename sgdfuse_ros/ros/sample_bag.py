"""Sample bags: two simulated cameras (radiometric thermal + RGB) built from image pairs.

:func:`make_sample_bag` writes what a thermal and an RGB camera running side by side record:
free-running stamps with jitter between the cameras, messages logged in arrival order, a
``mono16`` thermal stream of radiometric counts with sensor noise, optionally at its own
resolution (then the thermal -> RGB homography comes with it), and next to the bag the node's
parameter file for it. No ROS installation needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import heapq
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from sgdfuse_ros.core import imaging
from sgdfuse_ros.core.imaging import ImageError
from sgdfuse_ros.params import DEFAULTS, node_params_yaml
from .bag_io import (IMAGE, BagError, discard_output, image_message, make_header, offered_qos,
                     open_writer, progress_bar, typestore)

#: Radiometric model of the sample thermal stream: counts are centikelvin ("TLinear" output of
#: FLIR Boson/Tau radiometric cores), 8-bit level v -> -5 C + 0.2 K * v, plus sensor noise.
THERMAL_OFFSET = 26815.0   # cK: -5 C
THERMAL_GAIN = 20.0        # cK per 8-bit level: 0.2 K, so 0..255 spans -5..+46 C
THERMAL_NOISE = 5.0        # cK, standard deviation: a 50 mK NETD


@dataclass
class SampleBag:
    """What :func:`make_sample_bag` wrote."""

    path: Path
    storage: str
    frames: int
    rate_hz: float
    thermal_topic: str
    rgb_topic: str
    thermal_encoding: str
    rgb_encoding: str
    visible_size: tuple[int, int]
    thermal_size: tuple[int, int]
    homography: np.ndarray | None
    params_file: Path
    pairs: list[str]
    #: per frame: (pair index, RGB stamp ns, thermal stamp ns)
    schedule: list[tuple[int, int, int]] = field(default_factory=list)

    def homography_list(self) -> list[float]:
        return [] if self.homography is None else [float(x) for x in self.homography.ravel()]

    def format(self) -> str:
        vw, vh = self.visible_size
        tw, th = self.thermal_size
        lines = [f'wrote {self.path} ({self.storage}): {self.frames} thermal + {self.frames} RGB '
                 f'frames at {self.rate_hz:g} Hz from {len(self.pairs)} pair(s)',
                 f'  {self.thermal_topic}: {self.thermal_encoding} {tw}x{th}, '
                 'frame_id thermal_camera_optical_frame',
                 f'  {self.rgb_topic}: {self.rgb_encoding} {vw}x{vh}, '
                 'frame_id rgb_camera_optical_frame']
        if self.homography is not None:
            nums = ', '.join(f'{x:.6g}' for x in self.homography_list())
            lines.append(f'  thermal -> visible homography: [{nums}]')
        lines.append(f'  node parameters for this bag: {self.params_file}')
        return '\n'.join(lines)


def scale_homography(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """The homography that maps pixel coordinates of an image of size ``src`` onto the same
    view resized to ``dst`` (pixel centres aligned, as ``cv2.resize`` does)."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _crop_to_aspect(img: np.ndarray, aspect: float) -> np.ndarray:
    h, w = img.shape[:2]
    if w / h > aspect:
        nw = max(1, round(h * aspect))
        x0 = (w - nw) // 2
        return img[:, x0:x0 + nw]
    nh = max(1, round(w / aspect))
    y0 = (h - nh) // 2
    return img[y0:y0 + nh]


def _params_yaml(info: SampleBag) -> str:
    vw, vh = info.visible_size
    tw, th = info.thermal_size
    values: dict[str, Any] = {'thermal_topic': info.thermal_topic, 'rgb_topic': info.rgb_topic}
    comments = [f'sgdfuse_node parameters for the sample bag {info.path.name} (written by '
                '`sgdfuse bag make-sample`).',
                f'thermal {tw}x{th} {info.thermal_encoding}, RGB {vw}x{vh} {info.rgb_encoding}, '
                f'{info.rate_hz:g} Hz.',
                'Use it after the main file:  sgdfuse_node --ros-args --params-file '
                'config/sgdfuse.yaml --params-file THIS_FILE']
    if info.homography is not None:
        comments.append('homography: thermal -> visible pixels (row-major); the thermal camera '
                        'has its own resolution')
        values['homography'] = info.homography_list()
    return node_params_yaml(values, comments=comments)


def params_file_for(bag: str | os.PathLike) -> Path:
    """Where :func:`make_sample_bag` writes the node parameters of a bag: ``BAG.params.yaml``
    beside the bag folder."""
    bag = Path(bag)
    return bag.with_name(bag.name + '.params.yaml')


def make_sample_bag(out: str | os.PathLike, pairs_dir: str | os.PathLike | None = None, *,
                    rate_hz: float = 10.0, frames: int | None = None, repeat: int = 1,
                    hold: int = 1, thermal_encoding: str = 'mono16', rgb_encoding: str = 'rgb8',
                    visible_size: tuple[int, int] | str | None = (640, 480),
                    thermal_size: tuple[int, int] | str | None = None, storage: str = 'mcap',
                    thermal_topic: str = DEFAULTS['thermal_topic'],
                    rgb_topic: str = DEFAULTS['rgb_topic'], jitter_s: float = 0.01, seed: int = 0,
                    start_ns: int = 1_700_000_000 * 1_000_000_000,
                    progress: bool = False) -> SampleBag:
    """Write a two-camera sample bag built from registered image pairs.

    ``pairs_dir`` holds ``ir/`` and ``vi/`` with matching file names (default: the bundled
    samples). Each pair is centre-cropped to the aspect of ``visible_size`` and resized to it
    (None: the first pair's size). The RGB stream is ``rgb8`` or ``bgr8``. The thermal stream
    is ``mono16`` radiometric counts (centikelvin: :data:`THERMAL_OFFSET` + :data:`THERMAL_GAIN`
    * the 8-bit level + Gaussian noise of :data:`THERMAL_NOISE`, fresh each frame) or ``mono8``;
    at ``thermal_size`` when given, in which case the thermal -> visible homography is returned
    and written to the parameter file.

    Frames: ``frames`` in total (default ``len(pairs) * repeat * hold``), each pair shown for
    ``hold`` consecutive frames, at ``rate_hz``. The thermal stamp of each frame differs from
    the RGB one by a uniform jitter of up to ``jitter_s`` (kept below a quarter period), as two
    free-running cameras do; messages are logged 2-4 ms after their stamps, in arrival order.

    Next to the bag, ``BAG.params.yaml`` (:func:`params_file_for`) holds the node parameters
    for it (topics, and the homography when the sizes differ).
    """
    from sgdfuse_ros.core.paths import samples_dir

    out = Path(out)
    pairs_dir = Path(pairs_dir) if pairs_dir is not None else samples_dir()
    visible_size = imaging.parse_size(visible_size)
    thermal_size = imaging.parse_size(thermal_size)
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f'rate must be > 0 Hz, got {rate_hz}')
    if thermal_encoding not in ('mono16', 'mono8'):
        raise ValueError(f'thermal encoding must be mono16 or mono8, got {thermal_encoding!r}')
    if rgb_encoding not in ('rgb8', 'bgr8'):
        raise ValueError(f'RGB encoding must be rgb8 or bgr8, got {rgb_encoding!r}')
    if repeat < 1 or hold < 1 or (frames is not None and frames < 1):
        raise ValueError('frames, repeat and hold must be >= 1')
    if not jitter_s >= 0:
        raise ValueError(f'jitter must be >= 0 s, got {jitter_s}')
    if thermal_topic == rgb_topic:
        raise ValueError('the thermal and RGB topics must differ')
    if out.exists():
        raise BagError(f'{out}: already exists; choose a new output path')
    try:
        pairs, problems = imaging.match_pairs(pairs_dir / 'ir', pairs_dir / 'vi')
    except ImageError as exc:
        raise BagError(f'{pairs_dir}: need ir/ and vi/ folders of image pairs ({exc})') from exc
    if not pairs:
        raise BagError(f'{pairs_dir}: no image pairs with matching names in ir/ and vi/')

    sources = []
    for p in pairs:
        ir = imaging.read_image(p.ir, gray=True)
        vis = imaging.read_image(p.vis, gray=False)
        if ir.dtype != np.uint8:
            ir = imaging.to_uint8(imaging.ThermalGain(smoothing=0.0)(ir))
        if ir.shape[:2] != vis.shape[:2]:
            raise BagError(f'{p.name}: infrared {ir.shape[1]}x{ir.shape[0]} and visible '
                           f'{vis.shape[1]}x{vis.shape[0]} differ; the pairs must be registered')
        size = visible_size or (vis.shape[1], vis.shape[0])
        aspect = size[0] / size[1]
        vis = imaging.resize(_crop_to_aspect(vis, aspect), size)
        ir = imaging.resize(_crop_to_aspect(ir, aspect), size)
        if visible_size is None:
            visible_size = size
        t_size = thermal_size or size
        ir_t = imaging.resize(ir, t_size)
        if rgb_encoding == 'bgr8':
            vis = np.ascontiguousarray(vis[:, :, ::-1])
        sources.append((ir_t, vis))
    thermal_size = thermal_size or visible_size
    homography = (None if thermal_size == visible_size
                  else scale_homography(thermal_size, visible_size))

    n_frames = frames if frames is not None else len(pairs) * repeat * hold
    period_ns = int(round(1e9 / rate_hz))
    jitter_ns = int(min(jitter_s * 1e9, period_ns / 4))
    rng = np.random.default_rng(seed)
    info = SampleBag(path=out, storage=storage, frames=n_frames, rate_hz=float(rate_hz),
                     thermal_topic=thermal_topic, rgb_topic=rgb_topic,
                     thermal_encoding=thermal_encoding, rgb_encoding=rgb_encoding,
                     visible_size=visible_size, thermal_size=thermal_size,
                     homography=homography, params_file=params_file_for(out),
                     pairs=[p.name for p in pairs])
    ts = typestore()
    writer = open_writer(out, storage)
    try:
        t_conn = writer.add_connection(thermal_topic, IMAGE, typestore=ts,
                                       offered_qos_profiles=[offered_qos()])
        r_conn = writer.add_connection(rgb_topic, IMAGE, typestore=ts,
                                       offered_qos_profiles=[offered_qos()])
        pending: list[tuple[int, int, Any, bytes]] = []
        seq = 0
        bar = progress_bar(n_frames, 'make-sample', progress)
        for i in range(n_frames):
            k = (i // hold) % len(sources)
            ir_t, vis = sources[k]
            rgb_stamp = start_ns + i * period_ns + int(rng.integers(-500_000, 500_001))
            th_stamp = rgb_stamp + (int(rng.integers(-jitter_ns, jitter_ns + 1))
                                    if jitter_ns else 0)
            if thermal_encoding == 'mono16':
                counts = (THERMAL_OFFSET + THERMAL_GAIN * ir_t.astype(np.float32)
                          + rng.normal(0.0, THERMAL_NOISE, ir_t.shape).astype(np.float32))
                thermal = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
            else:
                thermal = ir_t
            t_msg = image_message(thermal, thermal_encoding,
                                  make_header(th_stamp, 'thermal_camera_optical_frame'))
            r_msg = image_message(vis, rgb_encoding,
                                  make_header(rgb_stamp, 'rgb_camera_optical_frame'))
            for conn, stamp, msg, lat in ((t_conn, th_stamp, t_msg, 3_000_000),
                                          (r_conn, rgb_stamp, r_msg, 2_000_000)):
                log_ns = stamp + lat + int(rng.integers(0, 1_000_001))
                heapq.heappush(pending, (log_ns, seq, conn, bytes(ts.serialize_cdr(msg, IMAGE))))
                seq += 1
            info.schedule.append((k, rgb_stamp, th_stamp))
            # Every later message is logged after this frame's RGB stamp + period / 2.
            horizon = rgb_stamp + period_ns // 2
            while pending and pending[0][0] <= horizon:
                log_ns, _, conn, data = heapq.heappop(pending)
                writer.write(conn, log_ns, data)
            if bar is not None:
                bar.update(1)
        while pending:
            log_ns, _, conn, data = heapq.heappop(pending)
            writer.write(conn, log_ns, data)
        if bar is not None:
            bar.close()
        writer.close()
    except BaseException:
        discard_output(writer, out)
        raise
    info.params_file.write_text(_params_yaml(info))
    return info


__all__ = ['SampleBag', 'make_sample_bag', 'params_file_for', 'scale_homography']

"""Refiner timing at 640x480 (docs/refiner.md, "Speed"): the shipped student in PyTorch and
ONNX Runtime, and the teacher in PyTorch.

    .venv/bin/python docs/refiner_timing.py
"""

import os
import statistics
import time

import cv2
import numpy as np

from sgdfuse_ros.core.paths import samples_dir
from sgdfuse_ros.core import imaging
from sgdfuse_ros.masks import build_provider
from sgdfuse_ros.fusion.sgdfuse import RefinerRunner
from sgdfuse_ros.fusion.stage1 import Stage1Method
from sgdfuse_ros.models.weights import STUDENT_WEIGHTS, TEACHER_WEIGHTS
from sgdfuse_ros.runtime import set_threads


def bench(fn, runs: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def main() -> None:
    set_threads(2)
    pair = imaging.dataset_pairs(samples_dir())[0]
    ir = imaging.read_image(pair.ir)
    ir = imaging.to_float(cv2.resize(ir if ir.ndim == 2 else ir[..., 0], (640, 480)))
    vis = cv2.resize(imaging.read_image(pair.vis), (640, 480))
    luma = imaging.to_float(imaging.visible_luma(vis))
    f1 = Stage1Method(backend='torch').run(ir, luma)
    masks = build_provider('saliency')(ir, vis).as_tuple()

    student = RefinerRunner.load(STUDENT_WEIGHTS)
    print('student, PyTorch (median, min ms):',
          bench(lambda: student.refine(f1, ir, luma, masks), 50, 10))
    student_ort = RefinerRunner.load(STUDENT_WEIGHTS)
    student_ort.use_backend('onnxruntime', threads=2)
    print('student, ONNX Runtime (median, min ms):',
          bench(lambda: student_ort.refine(f1, ir, luma, masks), 50, 10))
    diff = np.abs(student.refine(f1, ir, luma, masks) - student_ort.refine(f1, ir, luma, masks))
    print('max |PyTorch - ONNX Runtime|:', float(diff.max()))
    teacher = RefinerRunner.load(TEACHER_WEIGHTS)
    print(f'teacher ({teacher.steps} steps), PyTorch (median, min ms):',
          bench(lambda: teacher.refine(f1, ir, luma, masks), 5, 1))
    print('load average:', os.getloadavg())


if __name__ == '__main__':
    main()

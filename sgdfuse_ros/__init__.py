"""sgdfuse_ros: real-time thermal + RGB image fusion (SGDFuse) for ROS 2.

The method (``fusion``, ``models``, ``runtime``, ``training``) imports and runs without ROS; only
``sgdfuse_ros.ros`` needs rclpy.
"""

__version__ = '0.1.0'

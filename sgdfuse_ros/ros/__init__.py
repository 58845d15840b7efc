"""Everything that needs ROS 2: the node, synchronization, message conversion, bags."""

"""Everything that knows ROS 2 (its parameters are the ROS-free :mod:`sgdfuse_ros.params`).

* :mod:`.node`: ``sgdfuse_node`` (its console entry; the class is :mod:`.plain_node`) and
  :mod:`.lifecycle`: ``sgdfuse_lifecycle_node``, the managed variant; both thin around
  :mod:`.fusion_node` (the fusion, its worker and states), with :mod:`.node_params`
  (parameters on the node, run-time changes) and :mod:`.diagnostics` (what they report);
* :mod:`.sync`: the subscriptions that pair thermal and RGB frames by approximate time;
* :mod:`.convert`: Image / CompressedImage messages <-> numpy arrays;
* :mod:`.graph`: environment defaults (loopback, domain id, DDS profile), QoS, spinning,
  running a node process until Ctrl-C;
* :mod:`.bag_io`: reading and writing rosbag2 bags (mcap, sqlite3) without ROS;
* :mod:`.bag_fuse`: offline fusion of a bag (:func:`~.bag_fuse.fuse_bag`);
* :mod:`.sample_bag`: simulated thermal + RGB camera bags from image pairs;
* :mod:`.live`: playing and recording bags in a live graph (rclpy).

Importing this package imports nothing; rclpy loads with the nodes and :mod:`.live`'s
runners.
"""

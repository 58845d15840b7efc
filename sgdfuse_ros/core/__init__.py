"""The ROS-free, model-free core: imaging, metrics, classical baselines, time matching, slots,
hashing and paths. Imports nothing else of the package (numpy and OpenCV only)."""

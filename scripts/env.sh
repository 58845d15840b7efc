# Source this for ROS 2 traffic that stays on this machine and lets large image messages through:
#   . scripts/env.sh
# The same defaults as sgdfuse_ros.ros.graph.ros_env_defaults(), which the Python tools apply
# themselves: localhost discovery, a random domain id in 101-200, Fast DDS with the package's
# shared-memory profile. Values already set are kept.
_sgd_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 101 ))}
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export FASTRTPS_DEFAULT_PROFILES_FILE=${FASTRTPS_DEFAULT_PROFILES_FILE:-$_sgd_root/config/fastdds_shm.xml}
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$FASTRTPS_DEFAULT_PROFILES_FILE}
unset _sgd_root

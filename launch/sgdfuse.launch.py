"""Launch sgdfuse_node with a parameter file, optional sim time, topic remaps and the DDS profile.

    ros2 launch sgdfuse_ros sgdfuse.launch.py
    ros2 launch sgdfuse_ros sgdfuse.launch.py params_file:=/path/my.yaml use_sim_time:=true \
        thermal_topic:=/flir/image_raw rgb_topic:=/cam/image_raw fused_topic:=/fused \
        rviz:=true
    ros2 launch sgdfuse_ros sgdfuse.launch.py managed:=true autostart:=false

Arguments:
  params_file   node parameters (default: this package's config/sgdfuse.yaml)
  use_sim_time  take time from /clock (bag playback)
  thermal_topic, rgb_topic, fused_topic
                remap the node's default topics (/thermal/image_raw, /rgb/image_raw,
                /fused/image_raw) to these; the names in params_file must be the defaults
  dds_profile   Fast DDS profile given to the node (FASTRTPS_DEFAULT_PROFILES_FILE and
                FASTDDS_DEFAULT_PROFILES_FILE); default: config/fastdds_shm.xml. Camera drivers
                publishing large images should use the same profile.
  rviz          also start rviz2 with config/sgdfuse.rviz (where rviz2 is not installed the
                launch fails before it starts the node)
  log_level     the node's log level
  managed       start sgdfuse_lifecycle_node, the managed (lifecycle) node, instead of
                sgdfuse_node; it is driven through its lifecycle services (ros2 lifecycle set
                /sgdfuse deactivate, cleanup, configure, activate)
  autostart     with managed:=true (default true): configure and then activate it at launch,
                so that it fuses without a lifecycle manager; false: it waits unconfigured for
                configure / activate, as a vehicle stack's lifecycle manager drives it
  launch_prefix a command the node runs under, e.g. 'nice -n -5' (more CPU for the fusion on a
                contended computer: docs/benchmarks.md, "Node under load"; a negative nice
                needs root or CAP_SYS_NICE) or 'taskset -c 2,3'

The launch modules are imported inside generate_launch_description(), so this file can be
imported (and linted) where launch/launch_ros are not installed. The topic defaults are the
node's own (sgdfuse_ros.params); the executables are the package's console scripts
(:data:`EXECUTABLES`).
"""

from pathlib import Path

from sgdfuse_ros.params import DEFAULTS, NODE_NAME, TOPIC_PARAMETERS

# config/ sits beside launch/ both in the source tree and in share/sgdfuse_ros after install.
_SHARE = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = str(_SHARE / 'config' / 'sgdfuse.yaml')
DEFAULT_DDS_PROFILE = str(_SHARE / 'config' / 'fastdds_shm.xml')
DEFAULT_RVIZ = str(_SHARE / 'config' / 'sgdfuse.rviz')
#: The node's topic parameters and their defaults (sgdfuse_ros.params), remappable here.
DEFAULT_TOPICS = {name: DEFAULTS[name] for name in TOPIC_PARAMETERS}
#: The node's executable for managed:=false and managed:=true.
EXECUTABLES = {'false': 'sgdfuse_node', 'true': 'sgdfuse_lifecycle_node'}


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
    from launch.conditions import IfCondition, UnlessCondition
    from launch.events import matches_action
    from launch.substitutions import AndSubstitution, LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    args = [
        DeclareLaunchArgument('params_file', default_value=DEFAULT_PARAMS,
                              description='YAML file with the sgdfuse_node parameters'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag playback) instead of system time'),
        DeclareLaunchArgument('dds_profile', default_value=DEFAULT_DDS_PROFILE,
                              description='Fast DDS XML profile for large image messages'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='Start rviz2 with config/sgdfuse.rviz'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='Log level of the node'),
        DeclareLaunchArgument('managed', default_value='false',
                              description='Start the managed (lifecycle) node instead'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='managed:=true: configure and activate at launch '
                                          '(false: wait for a lifecycle manager)'),
        DeclareLaunchArgument('launch_prefix', default_value='',
                              description="Command the node runs under, e.g. 'nice -n -5'"),
    ]
    args += [DeclareLaunchArgument(name, default_value=topic,
                                   description=f'Remap {topic} to this topic')
             for name, topic in DEFAULT_TOPICS.items()]

    profile = LaunchConfiguration('dds_profile')
    managed = LaunchConfiguration('managed')
    common = dict(
        package='sgdfuse_ros',
        name=NODE_NAME,
        output='screen',
        emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'),
                    {'use_sim_time': LaunchConfiguration('use_sim_time')}],
        remappings=[(topic, LaunchConfiguration(name))
                    for name, topic in DEFAULT_TOPICS.items()],
        ros_arguments=['--log-level', LaunchConfiguration('log_level')],
        prefix=LaunchConfiguration('launch_prefix'),
        additional_env={'FASTRTPS_DEFAULT_PROFILES_FILE': profile,
                        'FASTDDS_DEFAULT_PROFILES_FILE': profile},
    )
    node = Node(executable=EXECUTABLES['false'], condition=UnlessCondition(managed), **common)
    lifecycle = LifecycleNode(executable=EXECUTABLES['true'], namespace='',
                              condition=IfCondition(managed), **common)
    autostart = IfCondition(AndSubstitution(managed, LaunchConfiguration('autostart')))
    configure = EmitEvent(event=ChangeState(
        lifecycle_node_matcher=matches_action(lifecycle),
        transition_id=Transition.TRANSITION_CONFIGURE), condition=autostart)
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=lifecycle, start_state='configuring', goal_state='inactive',
        entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(lifecycle),
            transition_id=Transition.TRANSITION_ACTIVATE))]), condition=autostart)
    rviz = Node(
        package='rviz2',
        executable='rviz2',
        name='sgdfuse_rviz',
        arguments=['-d', DEFAULT_RVIZ],
        parameters=[{'use_sim_time': LaunchConfiguration('use_sim_time')}],
        condition=IfCondition(LaunchConfiguration('rviz')),
        additional_env={'FASTRTPS_DEFAULT_PROFILES_FILE': profile,
                        'FASTDDS_DEFAULT_PROFILES_FILE': profile},
    )
    # rviz first: when rviz2 is not installed the launch fails at this action, before any node
    # is started (a failure after the nodes started would leave them running, orphaned).
    return LaunchDescription(args + [rviz, node, lifecycle, activate, configure])

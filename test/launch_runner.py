"""Run a package's launch file the way ``ros2 launch PACKAGE FILE [name:=value ...]`` does.

ros2cli is not on PyPI, so the launch tests run this instead, in its own process: the launch
file is found through the ament index, included with the arguments, and run by launch's own
``LaunchService`` (non-interactive, as ``ros2 launch --noninteractive``). SIGINT is restored
to its default first (a process started in a shell's background inherits it ignored), so that
SIGINT to this process stops the launch and, through it, the nodes it started.

    python test/launch_runner.py sgdfuse_ros sgdfuse.launch.py managed:=true

Not a test module: test_launch.py runs it in the environment scripts/launch_env.sh builds.
"""

import os
import signal
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print('usage: launch_runner.py PACKAGE LAUNCH_FILE [name:=value ...]', file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import AnyLaunchDescriptionSource

    package, name, *rest = argv
    arguments = []
    for arg in rest:
        key, sep, value = arg.partition(':=')
        if not sep:
            print(f'launch_runner: not name:=value: {arg!r}', file=sys.stderr)
            return 2
        arguments.append((key, value))
    path = os.path.join(get_package_share_directory(package), 'launch', name)
    service = LaunchService(argv=rest, noninteractive=True)
    service.include_launch_description(LaunchDescription([
        IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=arguments)]))
    return service.run()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

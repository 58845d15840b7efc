"""Joining the ROS 2 graph: environment defaults, QoS profiles, message classes, spinning, and
running a node process until Ctrl-C (:func:`run_node`).

Shared by the node, the live bag player and recorder, the demo and the benchmarks, so they all
meet on the same terms. Importing this module does not import rclpy: :func:`ros_env_defaults`
must run before the first rclpy context exists.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
import random
import sys
import threading
import time

#: ``ROS_DOMAIN_ID`` range drawn from when none is set (``scripts/env.sh`` uses the same), away
#: from the low ids other ROS users on a machine tend to pick.
DOMAIN_IDS = (101, 200)
DDS_PROFILE = 'fastdds_shm.xml'
#: A second SIGINT/SIGTERM within this many seconds of the first is the same stop.
REPEAT_SIGNAL_S = 2.0


def config_file(name: str) -> Path | None:
    """A file of the package's ``config/``: in the source tree, or installed under
    ``share/sgdfuse_ros``; None when neither has it."""
    for root in (Path(__file__).resolve().parents[2], Path(sys.prefix) / 'share' / 'sgdfuse_ros'):
        if (root / 'config' / name).is_file():
            return root / 'config' / name
    return None


def ros_env_defaults() -> Path | None:
    """Keep ROS 2 traffic on this machine and let large images through, unless configured.

    Sets, when unset: localhost-only discovery, a random ``ROS_DOMAIN_ID`` in
    :data:`DOMAIN_IDS` (parallel runs do not hear each other), Fast DDS as the middleware, and
    the package's shared-memory profile ``config/fastdds_shm.xml`` (both the Fast DDS 2 and 3
    variable). Returns the profile in effect (None: Fast DDS's default). ``scripts/env.sh`` does
    the same for a shell.
    """
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(*DOMAIN_IDS)))
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    profile = config_file(DDS_PROFILE)
    if profile is not None:
        os.environ.setdefault('FASTRTPS_DEFAULT_PROFILES_FILE', str(profile))
        os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    chosen = os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE')
    return Path(chosen) if chosen else None


def qos_profile(reliability: str, depth: int):
    """An rclpy QoS profile: keep last ``depth``, ``best_effort`` (sensor data) or
    ``reliable``, volatile."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    if reliability not in ('best_effort', 'reliable'):
        raise ValueError(f'reliability must be best_effort or reliable, got {reliability!r}')
    if depth < 1:
        raise ValueError(f'QoS depth must be >= 1, got {depth}')
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
                                   else ReliabilityPolicy.RELIABLE),
                      durability=DurabilityPolicy.VOLATILE)


def msg_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``, or None when it is not installed."""
    try:
        pkg, kind, name = msgtype.split('/')
        return getattr(importlib.import_module(f'{pkg}.{kind}'), name)
    except (ValueError, ImportError, AttributeError):
        return None


def spin(executor) -> None:
    """Spin ``executor`` until it is shut down (a thread target). An exception that ends the
    spin otherwise (a callback that raised) is printed as one line on stderr, not swallowed."""
    try:
        executor.spin()
    except Exception as exc:  # noqa: BLE001 - ExternalShutdownException at the end
        from rclpy.executors import ExternalShutdownException

        if not isinstance(exc, ExternalShutdownException) and executor.context.ok():
            print(f'executor stopped: {type(exc).__name__}: {exc}', file=sys.stderr, flush=True)


def join_spinner(executor, spinner, timeout: float = 10.0) -> None:
    """Shut ``executor`` down and wait for the thread ``spinner`` that spins it. A process
    must not exit while a thread is still inside rclpy's executor: that aborts it
    (``terminate called without an active exception``)."""
    if executor is not None:
        executor.shutdown(timeout_sec=timeout)
    if spinner is not None and spinner is not threading.current_thread():
        spinner.join(timeout)


def exit_now_if_threads_linger(code: int, logger=None) -> None:
    """At the end of a process: when a thread other than the main one still runs (a model
    build that outlived its wait), leave with ``code`` at once instead of letting the
    interpreter finalize under it, which aborts the process."""
    lingering = [t.name for t in threading.enumerate()
                 if t is not threading.main_thread() and t.is_alive()]
    if lingering and threading.current_thread() is threading.main_thread():
        text = f'exiting with threads still running: {", ".join(lingering)}'
        if logger is not None:
            logger.warning(text)
        else:
            print(text, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_node(make_node, args=None, *, name: str, threads: int = 1) -> int:
    """Run the node ``make_node()`` builds until SIGINT or SIGTERM, then stop it cleanly;
    returns the exit code (0; 2 when the parameters are invalid, 1 when the executor died: logged
    as one line).

    rclpy's own signal handler is not installed: it shuts the context down at once, under the feet
    of a worker thread still publishing. Here a signal only sets a flag; then, in order, the
    executor stops, ``node.stop()`` stops the node's work (its worker thread), the node is
    destroyed (a refiner build under way is waited for) and rclpy shut down, so a normal Ctrl-C or
    SIGTERM logs no error and never aborts. A second signal more than :data:`REPEAT_SIGNAL_S`
    later exits at once; one sooner is the same stop (a terminal's Ctrl-C under ``ros2 launch``
    reaches the node twice). ``threads``: executor
    threads (1, the default: a single-threaded executor; more: a multi-threaded one, whose callback
    groups run side by side). The nodes' callbacks are all short (the work is in their own
    threads), and rclpy's multi-threaded executor costs more than it saves: under CPU contention it
    delayed the image callbacks by 10-15 ms more at the median and the node fused fewer frames
    (docs/benchmarks.md).
    """
    import signal

    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    import rclpy.logging
    from rclpy.signals import SignalHandlerOptions

    from sgdfuse_ros.params import ParameterError

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    received: list[int] = []
    first: list[float] = []  # when the first signal came

    def on_signal(signum, _frame):
        if stop.is_set():
            # ros2 launch in a terminal: Ctrl-C reaches the node from the terminal, then launch
            # passes it on: one stop. A second one later: do not wait for the models.
            if time.monotonic() - first[0] > REPEAT_SIGNAL_S:
                os._exit(128 + signum)
            return
        first.append(time.monotonic())
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    logger = rclpy.logging.get_logger(name)
    node = executor = spinner = None
    code = 0
    try:
        node = make_node()
        executor = (MultiThreadedExecutor(num_threads=threads) if threads > 1
                    else SingleThreadedExecutor())
        executor.add_node(node)
        spinner = threading.Thread(target=spin, args=(executor,), name='sgdfuse-executor',
                                   daemon=True)
        spinner.start()
        while not stop.wait(1.0) and spinner.is_alive():
            pass
        if received:
            logger.info(f'stopping on {signal.Signals(received[0]).name}')
        elif not spinner.is_alive():
            logger.fatal('the executor stopped; exiting')
            code = 1
    except ParameterError as exc:
        logger.fatal(str(exc))
        code = 2
    finally:
        join_spinner(executor, spinner)
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    exit_now_if_threads_linger(code, logger)
    return code


__all__ = ['DOMAIN_IDS', 'config_file', 'exit_now_if_threads_linger', 'join_spinner', 'msg_class',
           'qos_profile', 'ros_env_defaults', 'run_node', 'spin']

"""The ``sgdfuse_node`` ROS 2 node: synchronized thermal + RGB images in, fused images out.

A plain node that loads its models and starts fusing when it is built; the managed variant is
:mod:`.lifecycle` (``sgdfuse_lifecycle_node``). Both are thin: the fusion (worker thread,
drop-oldest slot, ``max_latency``, run-time parameters, diagnostics) is
:class:`~.fusion_node.NodeFusion`, around :class:`~sgdfuse_ros.fusion.stream.FusionStream`.
Parameters: the schema of :mod:`sgdfuse_ros.params`; those read at start are refused while
the node runs with ``read-only: restart the node``.

Start it with ``sgdfuse_node --ros-args --params-file config/sgdfuse.yaml`` (venv) or
``ros2 run sgdfuse_ros sgdfuse_node --ros-args --params-file ...`` (ROS workspace). Ctrl-C or
SIGTERM stop it cleanly (:func:`~.graph.run_node`), also while it starts: this module imports
nothing heavy, so Ctrl-C during the start-up imports ends it with one line, exit status 130. The
class itself is :class:`~.plain_node.SgdfuseNode` (also importable from here).
"""


from __future__ import annotations

import sys

from sgdfuse_ros.core.interrupts import sigterm_as_interrupt


def __getattr__(name: str):
    if name == 'SgdfuseNode':
        from .plain_node import SgdfuseNode
        return SgdfuseNode
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def main(args=None) -> int:
    """Console entry ``sgdfuse_node``: spin the node until Ctrl-C or SIGTERM."""
    try:
        with sigterm_as_interrupt():  # until run_node installs its own handling
            from .graph import run_node
            from .plain_node import SgdfuseNode
    except KeyboardInterrupt:
        print('sgdfuse_node: interrupted while starting', file=sys.stderr)
        return 130
    return run_node(SgdfuseNode, args, name='sgdfuse_node')


if __name__ == '__main__':
    sys.exit(main())


__all__ = ['main']  # and SgdfuseNode, imported on first use

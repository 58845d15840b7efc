"""The ``sgdfuse_node`` ROS 2 node: synchronized thermal + RGB images in, fused images out.

A plain node that loads its models and starts fusing when it is built; the managed variant is
:mod:`.lifecycle` (``sgdfuse_lifecycle_node``). Both are thin: the fusion (worker thread,
drop-oldest slot, ``max_latency``, run-time parameters, diagnostics) is
:class:`~.fusion_node.NodeFusion`, around :class:`~sgdfuse_ros.fusion.stream.FusionStream`.
Parameters: the schema of :mod:`sgdfuse_ros.params`; those read at start are refused while
the node runs with ``read-only: restart the node``.

Start it with ``sgdfuse_node --ros-args --params-file config/sgdfuse.yaml`` (venv) or
``ros2 run sgdfuse_ros sgdfuse_node --ros-args --params-file ...`` (ROS workspace). Ctrl-C or
SIGTERM stop it cleanly (:func:`~.graph.run_node`).
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from sgdfuse_ros import params
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from .fusion_node import FusionNodeMixin, NodeFusion
from .graph import run_node


class SgdfuseNode(FusionNodeMixin, Node):
    """Synchronized thermal + RGB in, fused image out (see the module docstring).

    ``pipeline``: a built :class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline` to fuse with
    instead of the one the parameters describe (tests, embedding); the node owns it from then
    on and frees it when destroyed. The other parameters (topics, masks rate, ...) still apply.
    Raises :class:`~sgdfuse_ros.params.ParameterError` naming every invalid parameter.
    """

    def __init__(self, node_name: str = params.NODE_NAME, *,
                 pipeline: FusionPipeline | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        self.fusion = None
        try:
            self.fusion = NodeFusion(self, managed=False, pipeline=pipeline)
            self.fusion.configure()
            self.fusion.activate()
        except Exception:
            if self.fusion is not None:
                self.fusion.shutdown()
            super().destroy_node()
            raise

    def stop(self) -> None:
        """Stop fusing: the worker finishes the frame in hand, nothing is published after."""
        self.fusion.stop_worker()

    def destroy_node(self) -> None:
        """Stop the worker, free the models, destroy the node."""
        self.fusion.shutdown()
        super().destroy_node()


def main(args=None) -> int:
    """Console entry ``sgdfuse_node``: spin the node until Ctrl-C or SIGTERM."""
    return run_node(SgdfuseNode, args, name='sgdfuse_node')


if __name__ == '__main__':
    sys.exit(main())


__all__ = ['SgdfuseNode', 'main']

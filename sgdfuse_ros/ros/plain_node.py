"""The class of ``sgdfuse_node`` (:mod:`.node` is its console entry, light to import so that
Ctrl-C at start-up stops it quietly)."""

from __future__ import annotations

from rclpy.node import Node

from sgdfuse_ros import params
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from .fusion_node import FusionNodeMixin, NodeFusion


class SgdfuseNode(FusionNodeMixin, Node):
    """Synchronized thermal + RGB in, fused image out (see :mod:`.node`).

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


__all__ = ['SgdfuseNode']

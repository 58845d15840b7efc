"""The fusion node as a managed (lifecycle) node: :class:`SgdfuseLifecycleNode`, started by
``sgdfuse_lifecycle_node`` (:mod:`.lifecycle`).

Vehicle stacks bring their nodes up in order and take them down on demand through the lifecycle
services (``/<node>/change_state``, ``/<node>/get_state``; ``ros2 lifecycle set /sgdfuse
configure``). The transitions map onto :class:`~.fusion_node.NodeFusion`, the same fusion core
as the plain ``sgdfuse_node``:

``configure``   check the parameters, load the models and engines, create the publishers; an
                invalid parameter or a model that cannot load fails the transition (logged as
                one line) and the node stays unconfigured, to be fixed with ``ros2 param set``
``activate``    start the worker, the subscriptions and /diagnostics: fused frames flow
``deactivate``  stop the subscriptions and the worker (after the frame in hand); models stay
``cleanup``     destroy the publishers and free the models (memory back to the system)
``shutdown``    from any state: all of the above that applies

Parameters read at configuration may change while the node is unconfigured; while configured
they are refused with ``read-only: cleanup, set it and configure again``. The run-time ones
change in any state. Ctrl-C or SIGTERM shut the node down from whatever state it is in.

A transition that the current state does not offer, asked for by label or by id (lifecycle
managers send ids), is refused: ``success=false``, one warning line, the node stays as it was.
"""

from __future__ import annotations


from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from sgdfuse_ros import params
from sgdfuse_ros.fusion.pipeline import FusionPipeline
from sgdfuse_ros.params import ParameterError
from .fusion_node import FusionNodeMixin, NodeFusion


class SgdfuseLifecycleNode(FusionNodeMixin, LifecycleNode):
    """The managed fusion node (see the module docstring); it starts unconfigured.

    ``pipeline``: a built pipeline for the first configuration instead of the one the
    parameters describe (tests, embedding); freed by cleanup like any other. Raises
    :class:`~sgdfuse_ros.params.ParameterError` when a parameter has the wrong type (it cannot
    even be declared); other invalid values fail ``configure``.
    """

    def __init__(self, node_name: str = params.NODE_NAME, *,
                 pipeline: FusionPipeline | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        self.fusion = NodeFusion(self, managed=True, pipeline=pipeline)
        if self.fusion.parameters.problems:
            problems = self.fusion.parameters.problems
            self.fusion.shutdown()
            LifecycleNode.destroy_node(self)
            raise ParameterError('invalid parameters: ' + '; '.join(problems))
        self.get_logger().info(
            f'unconfigured: waiting for configure, then activate (ros2 lifecycle set '
            f'{self.get_fully_qualified_name()} configure; the launch file does both unless '
            'autostart:=false)')
        # rclpy answers a request by label for a transition the state does not offer, but
        # raises from its service callback for one by id, which ends the spin; check first.
        self._rclpy_change_state = self._service_change_state.callback
        self._service_change_state.callback = self._on_change_state

    def _on_change_state(self, request, response):
        """The ``change_state`` service: a transition the current state offers (by id or by
        label) runs; any other is refused with one warning line."""
        wanted = request.transition.label or request.transition.id
        offered = self._state_machine.available_transitions
        if not any(wanted in (t[0], t[1]) for t in offered):
            names = ', '.join(f'{t[1]} ({t[0]})' for t in offered) or 'none'
            self.get_logger().warning(
                f'change_state: transition {wanted!r} refused in state '
                f'{self.lifecycle_state!r} (offered: {names})')
            response.success = False
            return response
        try:
            return self._rclpy_change_state(request, response)
        except Exception as exc:  # noqa: BLE001 - an exception here would end the spin
            self.get_logger().error(f'change_state {wanted!r} failed: '
                                    f'{type(exc).__name__}: {exc}')
            response.success = False
            return response

    def _transition(self, name: str, step) -> TransitionCallbackReturn:
        """Run one step of :class:`NodeFusion`; a failure is logged as one line and fails the
        transition (rclpy would swallow the exception)."""
        try:
            step()
        except ParameterError as exc:
            self.get_logger().error(f'{name} failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - reported; the error transition cleans up
            self.get_logger().error(f'{name} failed: {type(exc).__name__}: {exc}')
            return TransitionCallbackReturn.ERROR
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition('configure', self.fusion.configure)
        if result == TransitionCallbackReturn.FAILURE:
            self.fusion.cleanup()  # whatever a failed configuration left
        elif result == TransitionCallbackReturn.SUCCESS:
            self.get_logger().info(f'configured: method {self.fusion.pipeline.method_name!r}, '
                                   f'publishing on {self.fusion.pub_fused.topic_name}')
        return result

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition('activate', self.fusion.activate)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self.get_logger().info('active: fusing')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition('deactivate', self.fusion.deactivate)
        if result == TransitionCallbackReturn.SUCCESS:
            self.get_logger().info('deactivated: not fusing; models kept')
            return super().on_deactivate(state)
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition('cleanup', self.fusion.cleanup)
        if result == TransitionCallbackReturn.SUCCESS:
            self.get_logger().info('cleaned up: models freed')
        return result

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._transition('shutdown', self.fusion.shutdown)
        if result == TransitionCallbackReturn.SUCCESS:
            self.get_logger().info(f'shut down: models freed (was {state.label})')
        return result

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # back to unconfigured with nothing loaded
        return self._transition('error recovery', self.fusion.shutdown)

    @property
    def lifecycle_state(self) -> str:
        """``unconfigured``, ``inactive``, ``active`` or ``finalized``."""
        return self._state_machine.current_state[1]

    def stop(self) -> None:
        """Shut down from any state (the ``shutdown`` transition; already finalized: no-op)."""
        if self.lifecycle_state in ('unconfigured', 'inactive', 'active'):
            self.trigger_shutdown()
        else:
            self.fusion.shutdown()

    def destroy_node(self) -> None:
        """Free the models whatever the state, then destroy the node."""
        self.fusion.shutdown()
        super().destroy_node()


__all__ = ['SgdfuseLifecycleNode']

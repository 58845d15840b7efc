"""The parameter schema (:mod:`sgdfuse_ros.params`) on a node: declared, read, changed at run time.

:class:`NodeParameters` declares every parameter of the schema on the node with its description,
range and whether it changes at run time, reads them back as checked settings, and is the
node's ``add_on_set_parameters_callback`` (``ros2 param set``):

* ``mask_rate``, ``max_latency``, ``output_encoding``, ``thermal_nonfinite`` and
  ``thermal_timeout`` take effect at once: the worker reads the settings once per pair; the
  mask worker reads its period at each refresh;
* ``refiner_steps``: the method is rebuilt with the new steps in a thread of its own (seconds:
  models loaded, the K-step graph exported on first use) while the running one goes on
  fusing, and the worker swaps it in between two frames. The call returns at once (the
  executor is never blocked); a build that fails is logged and counted, and the parameter is
  set back to the steps that run;
* the others are read when the node is configured: refused while it runs, with the reason
  (``read-only: restart the node``; a managed node: ``read-only: cleanup, set it and
  configure again``), and taken while a managed node is unconfigured;
* every value is checked by the schema, with the other parameters; a refused change names its
  problem and changes nothing.

The descriptors do not carry ``read_only``: rclpy would refuse such a change before this
callback runs, with a reason that does not say what to do.
"""

from __future__ import annotations

import dataclasses
import threading

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from sgdfuse_ros import params
from sgdfuse_ros.fusion.methods import build_method
from sgdfuse_ros.params import ParameterError


class NodeParameters:
    """The schema's parameters on ``fusion.node`` for a :class:`~.fusion_node.NodeFusion`."""

    def __init__(self, fusion):
        self.fusion = fusion
        self.node = fusion.node
        #: Parameters that could not be declared (a value of the wrong type), one line each.
        self.problems = self._declare()
        self._refiner_lock = threading.Lock()
        self._refiner_target: int | None = None  # steps asked for (0: the method's default)
        self._builder: threading.Thread | None = None
        self._closing = False
        self.node.add_on_set_parameters_callback(self.on_set)

    def close(self, timeout: float = 5.0) -> None:
        """Stop rebuilding: a build under way finishes (it cannot be cut short) and is
        discarded; waits for it up to ``timeout`` s. A process must not exit while the builder
        thread is inside PyTorch or ONNX Runtime: that aborts it. Rebuilds may be asked for
        again afterwards (a managed node configured again)."""
        with self._refiner_lock:
            self._closing = True
            builder = self._builder
        if builder is not None and builder.is_alive() \
                and builder is not threading.current_thread():
            self.node.get_logger().info('waiting for the refiner build under way to finish')
            builder.join(timeout)
        with self._refiner_lock:  # a managed node may be configured again
            self._closing = builder is not None and builder.is_alive()

    def _declare(self) -> list[str]:
        problems = []
        for p in params.PARAMETERS:
            desc = ParameterDescriptor(
                description=params.describe(p), additional_constraints=p.range_text(),
                # accept 1 for 1.0 and [] for no homography
                dynamic_typing=p.kind in ('float', 'floats'))
            default = list(p.default) if p.kind == 'floats' else p.default
            try:
                self.node.declare_parameter(p.name, default, desc)
            except Exception as exc:  # noqa: BLE001 - a wrong type in the YAML or command line
                problems.append(f'{p.name}: expected {params.KIND_TEXT[p.kind]} '
                                f'({type(exc).__name__}: {str(exc).split(": " + p.name)[0]})')
        return problems

    def _values(self, skip=()) -> dict:
        return {p.name: self.node.get_parameter(p.name).value for p in params.PARAMETERS
                if p.name not in skip and self.node.has_parameter(p.name)}

    def read_settings(self) -> params.NodeSettings:
        """The declared parameters' values, checked; :class:`ParameterError` names every
        problem (wrong types and invalid values)."""
        problems = list(self.problems)
        try:
            settings = params.validate_settings(self._values())
        except ParameterError as exc:
            problems.append(str(exc).removeprefix('invalid parameters: '))
        if problems:
            raise ParameterError('invalid parameters: ' + '; '.join(problems))
        return settings

    def on_set(self, changed) -> SetParametersResult:
        """The set-parameters callback (see the module docstring)."""
        ours = {p.name: p.value for p in changed if p.name in params.BY_NAME}
        if not ours:
            return SetParametersResult(successful=True)
        fixed = [n for n in ours if not params.BY_NAME[n].dynamic]
        fusion = self.fusion
        with fusion.transition:
            try:
                if fusion.state == 'unconfigured':
                    if fixed and not fusion.managed:  # the plain node, while it starts
                        raise ParameterError(f'{", ".join(fixed)}: read-only: restart the node')
                    params.validate_settings({**self._values(skip=ours), **ours})
                    return SetParametersResult(successful=True)
                if fixed:
                    raise ParameterError(
                        f'{", ".join(fixed)}: read-only: '
                        + ('cleanup, set it and configure again' if fusion.managed
                           else 'restart the node'))
                self._apply(params.validate_settings({**fusion.settings.as_dict(), **ours}))
            except ParameterError as exc:
                return SetParametersResult(successful=False,
                                           reason=str(exc).removeprefix('invalid parameters: '))
        return SetParametersResult(successful=True)

    def _apply(self, new) -> None:
        """Put checked run-time changes into effect (the transition lock is held)."""
        fusion = self.fusion
        old = fusion.settings
        if new.refiner_steps != old.refiner_steps:
            self._request_refiner(new.refiner_steps)
        if new.mask_rate != old.mask_rate and fusion.stream is not None:
            stream, worker = fusion.stream, fusion.stream.worker
            stream.mask_rate = new.mask_rate
            if worker is not None:  # the worker reads its period at each refresh
                worker.rate_hz, worker.period = new.mask_rate, 1.0 / new.mask_rate
                if new.mask_max_age_s is None:  # the default age limit follows the rate
                    worker.max_age_s = stream.mask_max_age = max(1.0, 3.0 / new.mask_rate)
        fusion.settings = new

    def _request_refiner(self, steps: int) -> None:
        method = self.fusion.pipeline.method
        if getattr(method, 'refiner', None) is None:
            raise ParameterError(f'refiner_steps: the method {method.name!r} has no diffusion '
                                 'refiner')
        with self._refiner_lock:
            if self._closing:
                raise ParameterError('refiner_steps: the node is shutting down')
            self._refiner_target = steps
            if self._builder is None or not self._builder.is_alive():
                self._builder = threading.Thread(target=self._build_refiners,
                                                 name='sgdfuse-rebuild', daemon=True)
                self._builder.start()

    def _running_steps(self) -> int:
        """``refiner_steps`` of the method that runs (or is about to: swapped at the next
        frame)."""
        return self.fusion.method_options().get('steps', 0)

    def _build_refiners(self) -> None:
        """Build methods until the newest requested steps run (the builder thread)."""
        fusion, logger = self.fusion, self.node.get_logger()
        while True:
            with fusion.transition:
                if fusion.pipeline is None:  # cleaned up meanwhile
                    return
                running, settings = self._running_steps(), fusion.settings
                name = fusion.pipeline.method.name
            with self._refiner_lock:
                target = self._refiner_target
                if target == running or self._closing:
                    self._builder = None
                    return
            options = dataclasses.replace(settings, refiner_steps=target
                                          ).pipeline_config().method_options
            logger.info(f'refiner_steps: building {name!r} with {target or "the default"} '
                        'steps beside the running one')
            try:
                built = build_method(name, **options)
            except Exception as exc:  # noqa: BLE001 - the running method goes on
                fusion.report_error('parameters', f'refiner_steps {target}: cannot build '
                                    f'{name!r}: {type(exc).__name__}: {exc}; still running '
                                    f'{running or "the default"} steps')
                with self._refiner_lock:
                    failed = self._refiner_target == target
                if failed:  # tell the truth on `ros2 param get`
                    from rclpy.parameter import Parameter
                    self.node.set_parameters([Parameter('refiner_steps', value=running)])
                continue
            with fusion.transition:
                if fusion.pipeline is None or fusion.pipeline.method.name != name \
                        or self._closing:
                    fusion.close_quietly(built)
                    return
                fusion.offer_method(built, options)


__all__ = ['NodeParameters']

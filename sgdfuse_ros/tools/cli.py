"""The ``sgdfuse`` command: the parser of every subcommand and the dispatch to it.

Each subcommand lives in its own module (:data:`COMMANDS`), which declares its options with
``add_arguments(parser)`` and runs with a function of the parsed arguments that returns the exit
status. This module only assembles them: the help line and description of each, and ``main``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import sys
from types import ModuleType

from sgdfuse_ros.core.interrupts import sigterm_as_interrupt
from sgdfuse_ros.runtime.extras import TorchRequired
from sgdfuse_ros.training import ablation
from . import ament_prefix, bag, bench, demo_command, export, fuse, masks, train
from . import eval as eval_command


@dataclass(frozen=True)
class Command:
    """One subcommand: where it lives and how ``sgdfuse --help`` describes it."""

    #: The module with ``add_arguments(parser)`` and the run function.
    module: ModuleType
    #: Name of the run function in ``module``: ``run(args) -> int`` (the exit status).
    run: str
    help: str
    description: str


#: The subcommands, in the order ``sgdfuse --help`` lists them.
COMMANDS: dict[str, Command] = {
    'fuse': Command(
        fuse, 'run',
        'fuse infrared + visible images (a pair of files, folders, or a video as folders)',
        'Fuse a registered infrared/visible pair, or every pair of two folders (matched by file '
        'name). With --sequence the folders are the frames of one video, fused in name order as '
        'the live node would (temporal thermal gain, masks refreshed at --mask-rate). Colour '
        'output when the visible input has colour.'),
    'eval': Command(
        eval_command, 'run',
        'score fused images with the standard fusion metrics',
        'Mean EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, PSNR and CC of fused images against '
        'their infrared and visible sources (8-bit gray). --convention evaluator computes SSIM '
        'and PSNR as the evaluator published with MMIF-CDDFuse does, to compare with published '
        'tables.'),
    'demo': Command(
        demo_command, 'run',
        'the live demo: sample bag -> node -> fused bag, metrics',
        'Make a sample bag from the bundled pairs, start sgdfuse_node, play the bag into it, '
        'record the fused topic, then print throughput, latency and the metric table and write '
        'a contact sheet. With --offline: fuse the sample pairs with the default method and the '
        'classical baselines and print the metrics for each method.'),
    'train': Command(
        train, 'run',
        'train the networks (stage1, stage2, distill)',
        'Train a network of the method on registered pairs.'),
    'export': Command(
        export, 'run_export',
        'export the networks to ONNX (checked against PyTorch)',
        "Export stage 1, the refiner and the mask provider's networks to ONNX (opset 17, "
        'dynamic height/width), check each against PyTorch on a real sample pair and write a '
        "JSON sidecar with the source weights' SHA-256."),
    'bench': Command(
        bench, 'run_bench_command',
        'time the fusion pipeline per stage on a backend',
        'Per-stage median and p95 latency (thermal preprocessing, stage 1, masks, refiner, '
        'colour merge), end-to-end fps and peak memory on the bundled sample pairs.'),
    'bag': Command(
        bag, 'run',
        'rosbag2 tools: fuse a bag or many (on Ray), play, record, make a sample bag',
        'Offline fusion of rosbag2 bags (mcap, sqlite3) and, with rclpy, playing and recording '
        'bags without the ros2 command.'),
    'masks': Command(
        masks, 'run_masks_command',
        'write the semantic masks of image pairs (and overlays)',
        'Compute the IR and visible semantic masks of a pair of files, or of every pair of two '
        'folders (matched by file name), and write NAME_ir_mask.png, NAME_vis_mask.png (8-bit, '
        'input size) and NAME_overlay.png into --out.'),
    'ablate': Command(
        ablation, 'run_ablate_command',
        "the paper's ablation table (and mask robustness)",
        'Score the full method, its ablations (without SAM, single stage, without diffusion, '
        'without HFAH) and the full method with eroded / dilated masks on folders of pairs.'),
    'ament-prefix': Command(
        ament_prefix, 'run',
        'make this pip install findable by ros2 launch / ros2 run (an ament prefix)',
        'Write an ament prefix (index entry, share/sgdfuse_ros with the launch and config '
        'files, lib/sgdfuse_ros node executables run by this interpreter) for a pip-installed '
        'sgdfuse_ros; put it on AMENT_PREFIX_PATH. A colcon build needs none.'),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='sgdfuse', description='Thermal + RGB image fusion (SGDFuse) tools.')
    parser.add_argument('--version', action='store_true', help='print the version and exit')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description)
        cmd.module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from sgdfuse_ros import __version__
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    cmd = COMMANDS[args.command]
    try:
        with sigterm_as_interrupt():  # SIGTERM cleans up as Ctrl-C does
            return getattr(cmd.module, cmd.run)(args)
    except KeyboardInterrupt:  # a command with nothing of its own to say about it
        print(f'sgdfuse {args.command}: interrupted', file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # the runtime install has no PyTorch: say so in one line
        if exc.name != 'torch':
            raise
        line = exc if isinstance(exc, TorchRequired) else TorchRequired(f'sgdfuse {args.command}')
        print(f'sgdfuse: error: {line}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())

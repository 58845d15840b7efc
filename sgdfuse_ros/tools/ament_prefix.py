"""``sgdfuse ament-prefix DIR``: make a pip-installed sgdfuse_ros findable by ``ros2 launch``.

``ros2 launch sgdfuse_ros sgdfuse.launch.py`` and ``ros2 run sgdfuse_ros sgdfuse_node`` look
the package up in the ament index of the prefixes on ``AMENT_PREFIX_PATH``, take the launch
file from ``<prefix>/share/sgdfuse_ros/launch`` and run the nodes from
``<prefix>/lib/sgdfuse_ros/``. A colcon build installs all three (``setup.cfg`` puts the
console scripts under ``lib/sgdfuse_ros``). A pip install does not: its console scripts go to
``bin/``, and an editable install writes no ament index entry either. This command writes a
prefix that has them, for the package as this interpreter imports it:

``share/ament_index/resource_index/packages/sgdfuse_ros``   the index entry
``share/sgdfuse_ros/``     ``package.xml``, ``launch/``, ``config/`` (copies)
``lib/sgdfuse_ros/``       one script per node, run by this interpreter

Then ``export AMENT_PREFIX_PATH=DIR:$AMENT_PREFIX_PATH``. Run it again after the package's
launch or config files change (they are copied).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import shutil
import sys

PACKAGE = 'sgdfuse_ros'
#: The node executables (the console scripts of ``setup.py``): name -> module with ``main``.
EXECUTABLES = {'sgdfuse_node': 'sgdfuse_ros.ros.node',
               'sgdfuse_lifecycle_node': 'sgdfuse_ros.ros.lifecycle'}
#: What ``share/sgdfuse_ros`` holds: files and folders, relative to the package's share root.
SHARE_ITEMS = ('package.xml', 'launch', 'config')


def share_source() -> Path:
    """Where this installation keeps ``package.xml``, ``launch/`` and ``config/``: the
    checkout the package is imported from (editable install, ``PYTHONPATH``), else the
    ``share/sgdfuse_ros`` a pip install wrote (``data_files``). Raises ``FileNotFoundError``
    naming the places looked at."""
    here = Path(__file__).resolve().parents[2]
    candidates = [here, Path(sys.prefix) / 'share' / PACKAGE]
    try:
        import site
        candidates.append(Path(site.getuserbase()) / 'share' / PACKAGE)
    except (AttributeError, ImportError):  # pragma: no cover - a stripped interpreter
        pass
    for root in candidates:
        if (root / 'package.xml').is_file() and (root / 'launch').is_dir():
            return root
    raise FileNotFoundError('no package.xml and launch/ of sgdfuse_ros in '
                            + ', '.join(str(c) for c in candidates))


def node_script(module: str, python: str) -> str:
    """The text of a ``lib/sgdfuse_ros`` executable that runs ``module.main()``."""
    return (f'#!{python}\n'
            f'"""sgdfuse_ros node executable (written by sgdfuse ament-prefix)."""\n'
            'import sys\n\n'
            f'from {module} import main\n\n'
            "if __name__ == '__main__':\n"
            '    sys.exit(main())\n')


def write_prefix(prefix: str | os.PathLike, *, python: str | None = None) -> Path:
    """Write the ament prefix described in the module docstring at ``prefix`` (replacing an
    earlier one's files of this package); returns its path."""
    prefix = Path(prefix).resolve()
    source = share_source()
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True, exist_ok=True)
    (index / PACKAGE).write_text('')
    share = prefix / 'share' / PACKAGE
    for item in SHARE_ITEMS:
        src, dst = source / item, share / item
        if dst.is_dir():
            shutil.rmtree(dst)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__'))
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    lib = prefix / 'lib' / PACKAGE
    lib.mkdir(parents=True, exist_ok=True)
    for name, module in EXECUTABLES.items():
        path = lib / name
        path.write_text(node_script(module, python or sys.executable))
        path.chmod(0o755)
    return prefix


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('prefix', help='folder to write the ament prefix into (created)')
    p.add_argument('--python', default=None,
                   help='interpreter the node executables run with (default: this one)')


def run(args: argparse.Namespace) -> int:
    try:
        prefix = write_prefix(args.prefix, python=args.python)
    except (OSError, FileNotFoundError) as exc:
        print(f'sgdfuse ament-prefix: {exc}', file=sys.stderr)
        return 2
    print(f'wrote an ament prefix for {PACKAGE} at {prefix}; use it with\n'
          f'  export AMENT_PREFIX_PATH={prefix}${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}')
    return 0


__all__ = ['EXECUTABLES', 'SHARE_ITEMS', 'add_arguments', 'node_script', 'run', 'share_source',
           'write_prefix']

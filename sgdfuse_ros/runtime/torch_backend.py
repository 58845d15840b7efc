"""The ``torch`` backend: a PyTorch module run in inference mode, the reference for the others."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .base import Backend, BackendError, as_float32, reject_unknown


class TorchBackend(Backend):
    """A PyTorch module run in inference mode.

    ``module(*inputs)`` takes the inputs in ``input_names`` order and returns a tensor or a tuple
    in ``output_names`` order. Options: ``device``, ``channels_last`` (NHWC memory format for
    4-D inputs and the module's weights). The CPU threads are PyTorch's process-wide setting,
    which this backend leaves alone (see :func:`sgdfuse_ros.runtime.set_threads`).
    """

    name = 'torch'
    source = 'module'

    def __init__(self, module, input_names: Sequence[str], output_names: Sequence[str], *,
                 device: str = 'cpu', channels_last: bool = False, **unused):
        import torch

        reject_unknown('torch', unused)
        self._torch = torch
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise BackendError('torch', f'bad device {device!r}: {exc}') from exc
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise BackendError('torch', 'no CUDA device (torch.cuda.is_available() is False)')
        self.channels_last = bool(channels_last)
        module = module.to(self.device).eval()
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def describe(self) -> str:
        t = self._torch
        threads = f', {t.get_num_threads()} threads' if self.device.type == 'cpu' else ''
        nhwc = ', channels_last' if self.channels_last else ''
        return f'torch {t.__version__} on {self.device}{threads}{nhwc}'

    def summary(self) -> str:
        return torch_summary(self._torch, str(self.device))

    def run_tensors(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run on torch tensors (already on the device); returns torch tensors."""
        self._check_inputs(inputs)
        with self._torch.inference_mode():
            out = self.module(*[inputs[n] for n in self.input_names])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != len(self.output_names):
            raise RuntimeError(f'torch: the module returned {len(outs)} outputs, expected '
                               f'{self.output_names}')
        return dict(zip(self.output_names, outs))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        self._check_inputs(inputs)
        tensors = {}
        for n in self.input_names:
            t = torch.from_numpy(as_float32(inputs[n])).to(self.device)
            if self.channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            tensors[n] = t
        outs = self.run_tensors(tensors)
        return {n: t.float().cpu().contiguous().numpy() for n, t in outs.items()}


def torch_summary(torch, device: str = 'cpu') -> str:
    """``torch (cpu, 2 threads)``: where a PyTorch module runs (also for the methods that run
    their modules directly rather than through a backend)."""
    if str(device).startswith('cuda'):
        return f'torch ({device})'
    return f'torch ({device}, {torch.get_num_threads()} threads)'

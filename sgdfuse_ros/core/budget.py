"""The pixel budget: the largest frame the networks run on, so memory is set by configuration.

A fusion network's memory grows with the pixels it runs on (about 0.5 GB per megapixel for
the default method on ONNX Runtime, see docs/benchmarks.md); an 8000x6000 pair at full size
needs more than 20 GB. A :class:`PixelBudget` bounds that: frames within ``max_pixels`` run at
their own size, larger ones either run at the largest size within the budget that keeps their
aspect (``resize``: the caller brings the result back to the frame's size) or are refused with
a :class:`FrameTooLarge` error (``refuse``).

The networks pad each side to a multiple (``multiple``, 32 for the default method), so the
budget also counts the padded frame: ordinary frames pad by a few percent (1920x1080 runs on
1920x1088), but a thin one would swell without bound (500000x1 runs on 500000x32: 16 MP for a
frame of 0.5 MP). A frame fits when its own pixels are within ``max_pixels`` and its padded
pixels within ``max_pixels`` plus :func:`pad_allowance`, the padding of a square frame of
``max_pixels`` (under 5 % of the default budget).
"""

from __future__ import annotations

from dataclasses import dataclass
import math

from .imaging import ImageError

#: The default budget: 1920x1080 pixels (under 1 GB peak for the default method on CPU).
DEFAULT_MAX_PIXELS = 1920 * 1080
#: What happens to a frame over the budget.
OVERSIZE_MODES = ('resize', 'refuse')
def pad_allowance(max_pixels: int, multiple: int) -> int:
    """How far padding to ``multiple`` may take a frame over ``max_pixels``: as far as it
    takes a square frame of ``max_pixels`` at most (90241 pixels for 1920x1080 and 32)."""
    return (multiple - 1) * (2 * math.isqrt(max_pixels) + multiple - 1)


def padded(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``(W, H)`` with each side rounded up to ``multiple``."""
    return tuple(-(-int(v) // multiple) * multiple for v in size)


class FrameTooLarge(ImageError):
    """A frame over the pixel budget in ``refuse`` mode. The message names ``max_pixels``;
    :meth:`describe` words it with other option names (a command line's flags)."""

    def __init__(self, name: str, size: tuple[int, int], max_pixels: int, multiple: int = 1):
        self.name, self.size, self.max_pixels = name, (int(size[0]), int(size[1])), max_pixels
        self.multiple = multiple
        super().__init__(self.describe())

    def describe(self, budget_option: str = 'max_pixels',
                 mode_option: str = "oversize='resize'") -> str:
        w, h = self.size
        pw, ph = padded(self.size, self.multiple)
        runs = (f', run on {pw}x{ph} ({pw * ph} pixels) padded to a multiple of '
                f'{self.multiple}' if w * h <= self.max_pixels else '')
        return (f'{self.name}: frame {w}x{h} ({w * h} pixels{runs}) is over the pixel budget '
                f'{budget_option} {self.max_pixels} ({pixels_text(self.max_pixels)}); raise '
                f'{budget_option} (0: no limit) or use {mode_option} (run it at the largest '
                'size within the budget)')


def pixels_text(pixels: int) -> str:
    """``2073600`` -> ``'2.07 MP'``."""
    return f'{pixels / 1e6:.3g} MP'


def parse_max_pixels(value: str | int | None) -> int | None:
    """A pixel budget from ``2073600``, ``'2073600'`` or ``'1920x1080'``; 0 or None: no limit
    (None). Raises ``ValueError`` naming the accepted forms."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f'max_pixels must be a pixel count or WxH, got {value!r}')
    if isinstance(value, int):
        pixels = value
    else:
        text = str(value).strip().lower()
        try:
            if 'x' in text:
                w, h = (int(v) for v in text.split('x'))
                if w <= 0 or h <= 0:
                    raise ValueError
                pixels = w * h
            else:
                pixels = int(text)
        except ValueError:
            raise ValueError(f'max_pixels must be a pixel count (e.g. 2073600) or WxH (e.g. '
                             f'1920x1080), 0 for no limit; got {value!r}') from None
    if pixels < 0:
        raise ValueError(f'max_pixels must be >= 0 (0: no limit), got {pixels}')
    return pixels or None


def _within(size: tuple[int, int], max_pixels: int, multiple: int) -> bool:
    pw, ph = padded(size, multiple)
    return (size[0] * size[1] <= max_pixels
            and pw * ph <= max_pixels + pad_allowance(max_pixels, multiple))


def fit_pixels(size: tuple[int, int], max_pixels: int, multiple: int = 1) -> tuple[int, int]:
    """The largest ``(W, H)`` with the aspect of ``size`` and at most ``max_pixels`` pixels,
    padded ones included (module docstring; ``size`` itself when it fits; each side at least
    1)."""
    w, h = int(size[0]), int(size[1])
    if multiple > 1:
        if _within((w, h), max_pixels, multiple):
            return w, h
        lo, hi = 0.0, 1.0  # the largest scale that fits, by bisection (monotonic)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            if _within((max(1, math.floor(w * mid)), max(1, math.floor(h * mid))),
                       max_pixels, multiple):
                lo = mid
            else:
                hi = mid
        return max(1, math.floor(w * lo)), max(1, math.floor(h * lo))
    if w * h <= max_pixels:
        return w, h
    scale = math.sqrt(max_pixels / (w * h))
    nw, nh = max(1, math.floor(w * scale)), max(1, math.floor(h * scale))
    while nw * nh > max_pixels and (nw > 1 or nh > 1):  # floating-point edge cases
        if nw >= nh:
            nw -= 1
        else:
            nh -= 1
    return nw, nh


@dataclass(frozen=True)
class PixelBudget:
    """At most ``max_pixels`` pixels (None: no limit) per network input, counted after padding
    each side to ``multiple`` (module docstring); frames over it are resized
    (``mode='resize'``) or refused (``mode='refuse'``)."""

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    mode: str = 'resize'
    multiple: int = 1

    def __post_init__(self):
        if self.mode not in OVERSIZE_MODES:
            raise ValueError(f'oversize must be one of {", ".join(OVERSIZE_MODES)}, got '
                             f'{self.mode!r}')
        object.__setattr__(self, 'max_pixels', parse_max_pixels(self.max_pixels))
        if int(self.multiple) < 1:
            raise ValueError(f'multiple must be >= 1, got {self.multiple}')
        object.__setattr__(self, 'multiple', int(self.multiple))

    def fits(self, size: tuple[int, int]) -> bool:
        """True when ``(W, H)`` is within the budget (padding included)."""
        return self.max_pixels is None or _within(size, self.max_pixels, self.multiple)

    def check(self, size: tuple[int, int], name: str = 'frame') -> None:
        """Raise :class:`FrameTooLarge` for a frame over the budget in ``refuse`` mode."""
        if self.mode == 'refuse' and not self.fits(size):
            raise FrameTooLarge(name, size, self.max_pixels, self.multiple)

    def working_size(self, size: tuple[int, int], name: str = 'frame') -> tuple[int, int]:
        """The size to run at for a frame of ``(W, H)``: itself within the budget, else the
        largest size of its aspect within it (``resize``) or :class:`FrameTooLarge`
        (``refuse``)."""
        self.check(size, name)
        if self.fits(size):
            return int(size[0]), int(size[1])
        return fit_pixels(size, self.max_pixels, self.multiple)

"""Label-mixing baselines: Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) through ``timm.data.Mixup``.

Unlike Random Erasing and RelDrop, these change the labels: a call returns the mixed batch *and*
soft targets, and the training loss is the soft-target cross-entropy
(:func:`soft_target_cross_entropy`, timm's ``SoftTargetCrossEntropy``)::

    mix = MixupCutmix("cutmix", num_classes=10, p=0.5)        # alpha 1, no label smoothing
    x_mixed, target = mix(x, y)                               # (B, C, H, W), (B, K) rows summing to 1
    loss = soft_target_cross_entropy(model(x_mixed), target)

timm's Mixup in ``mode="batch"``: one λ ~ Beta(α, α) per batch, each image mixed with the image at
the mirrored batch position (``x.flip(0)``); CutMix pastes one box of area ≈ (1 − λ) and corrects
λ to the clipped box (``correct_lam``). ``p`` is the chance that a batch is mixed at all.
``label_smoothing`` defaults to 0 (timm's class defaults to 0.1). An odd batch mixes its first
B − 1 images and leaves the last one with its one-hot label (timm needs an even batch).

Randomness: timm draws from NumPy's global generator. Here every call runs timm on a private
``numpy.random.RandomState`` seeded from ``generator.initial_seed()`` (the training loop re-seeds the
augmentation generator every epoch, so a resumed run mixes exactly as an uninterrupted one) and
puts NumPy's global state back afterwards: nothing global changes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MixupCutmix", "soft_target_cross_entropy", "MIX_NAMES"]

#: ``aug.name`` values of the label-mixing augmentations
MIX_NAMES = ("mixup", "cutmix")


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``−Σ_k target_k · log softmax(logits)_k``; logits, target: ``(B, K)``."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class MixupCutmix:
    """Mixup or CutMix of a normalized image batch: ``(x (B, C, H, W), y (B,)) -> (x_mixed, target (B, K))``.

    Args:
        kind: "mixup" or "cutmix".
        num_classes: K, the width of the soft targets.
        alpha: the Beta(α, α) parameter of λ (both papers use 1 on CIFAR).
        p: probability that a batch is mixed (CutMix's CIFAR setting 0.5, Mixup's 1).
        label_smoothing: timm's smoothing of the targets before mixing (0: none).
        generator: the torch generator whose ``initial_seed()`` seeds the mixing draws.
    """

    mixes_labels = True  # the training loop uses the returned soft targets and soft-target cross-entropy

    def __init__(self, kind: str, *, num_classes: int, alpha: float = 1.0, p: float = 1.0,
                 label_smoothing: float = 0.0, generator: torch.Generator | None = None) -> None:
        if kind not in MIX_NAMES:
            raise ValueError(f"kind must be one of {', '.join(MIX_NAMES)}, got {kind!r}")
        for name, value in (("alpha", alpha), ("p", p), ("label_smoothing", label_smoothing)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"{kind}: {name} must be a finite number, got {value!r}")
        if not alpha > 0:
            raise ValueError(f"{kind}: alpha must be > 0, got {alpha!r}")
        if not 0.0 <= p <= 1.0 or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"{kind}: p must be in [0, 1] and label_smoothing in [0, 1), got {p!r}, {label_smoothing!r}")
        if int(num_classes) < 2:
            raise ValueError(f"{kind}: num_classes must be >= 2, got {num_classes!r}")
        try:
            from timm.data import Mixup
        except ImportError as err:  # pragma: no cover - timm is in the test extra
            raise ImportError(f"aug {kind!r} uses timm's Mixup: pip install timm (or reldrop[timm])") from err
        self.kind, self.alpha, self.num_classes = kind, float(alpha), int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.generator = generator
        self.enabled = True
        self.last_stats: dict[str, Any] = {}
        self._mixup = Mixup(mixup_alpha=self.alpha if kind == "mixup" else 0.0,
                            cutmix_alpha=self.alpha if kind == "cutmix" else 0.0, prob=float(p), switch_prob=0.0,
                            mode="batch", correct_lam=True, label_smoothing=self.label_smoothing,
                            num_classes=self.num_classes)
        self._seed: int | None = None
        self._state = np.random.RandomState(0)

    @property
    def p(self) -> float:
        """Probability that a batch is mixed (settable: ``aug.p_schedule`` changes it per epoch)."""
        return float(self._mixup.mix_prob)

    @p.setter
    def p(self, value: float) -> None:
        self._mixup.mix_prob = float(value)

    def _rng_state(self) -> np.random.RandomState:
        seed = int(self.generator.initial_seed()) if self.generator is not None else 0
        if seed != self._seed:  # a new epoch (the loop re-seeds the generator): a new stream
            self._seed, self._state = seed, np.random.RandomState(seed % (2 ** 32))
        return self._state

    def targets(self, y: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
        """Soft targets ``(B, K)`` of the unmixed labels (with the label smoothing)."""
        from timm.data.mixup import mixup_target

        return mixup_target(y, self.num_classes, lam=lam, smoothing=self.label_smoothing)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"{self.kind} mixes image batches (B, C, H, W), got shape {tuple(x.shape)}")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{self.kind}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if not self.enabled or x.shape[0] < 2:
            return x, self.targets(y).to(x.dtype)
        x = x.clone()  # timm mixes in place
        even = x.shape[0] - x.shape[0] % 2
        state = self._rng_state()
        saved = np.random.get_state()
        np.random.set_state(state.get_state())
        try:
            mixed, target = self._mixup(x[:even], y[:even])
        finally:
            state.set_state(np.random.get_state())
            np.random.set_state(saved)
        if even < x.shape[0]:
            mixed = torch.cat([mixed, x[even:]])
            target = torch.cat([target, self.targets(y[even:])])
        x = mixed
        return x, target.to(x.dtype)

    def __repr__(self) -> str:
        return (f"MixupCutmix({self.kind!r}, alpha={self.alpha}, p={self.p}, label_smoothing={self.label_smoothing}, "
                f"num_classes={self.num_classes})")

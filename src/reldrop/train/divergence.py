"""A diverged run stops: a non-finite training loss ends the run before the epoch is saved.

:class:`DivergenceGuard` watches the loss of every step. With ``train.max_bad_steps: 0`` (default)
it records the first non-finite step on the device (no host sync per step) and
:meth:`~DivergenceGuard.check` raises :class:`TrainingDivergedError` at the end of the epoch, before
its metrics and checkpoints are written: ``last.pt``/``best.pt`` keep the last finite epoch and a NaN
model is never saved as the best. With ``max_bad_steps: N > 0`` each step's loss is checked (one
host sync per step) and up to ``N`` steps per epoch with a non-finite loss are skipped (no optimizer
step); the next one stops the run.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = ["TrainingDivergedError", "DivergenceGuard"]

_ADVICE = ("lower optim.lr, set train.grad_clip, or check the data; last.pt/best.pt (if any) hold the epochs "
           "before this one")


class TrainingDivergedError(RuntimeError):
    """The training loss (or the model's output / weights) became NaN or infinite."""


def _nonfinite_weights(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]


def _output_finite(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model(x)`` is finite (only on the error path; the model is left as it was)."""
    from ..attribution.state import preserve_model_state

    if not bool(torch.isfinite(x).all()):
        return True  # a non-finite input is the data's fault, reported as such by the augmentation
    with preserve_model_state(model), torch.no_grad():
        model.eval()  # as the attribution sees it (BN running statistics)
        out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return not isinstance(out, torch.Tensor) or bool(torch.isfinite(out).all())


class DivergenceGuard:
    """Per-epoch watcher of the training loss (see the module docstring)."""

    def __init__(self, max_bad_steps: int, device: torch.device) -> None:
        self.max_bad_steps = int(max_bad_steps or 0)
        self.device = device
        self.reset(0)

    def reset(self, epoch: int) -> None:
        """Start watching epoch ``epoch`` (0-based)."""
        self.epoch = int(epoch)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.bad_input = torch.zeros((), dtype=torch.bool, device=self.device)
        self.skipped = 0
        self.step = 0

    def skip(self, loss: torch.Tensor, x: torch.Tensor, step: int) -> bool:
        """Record step ``step``'s loss; True when the step must be skipped (only with max_bad_steps > 0)."""
        self.step = step
        bad = ~torch.isfinite(loss.detach())
        if self.max_bad_steps <= 0:  # no sync: recorded on the device, checked at the end of the epoch
            self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, step),
                                         self.first_bad)
            self.bad_input |= bad & ~torch.isfinite(x.detach()).all()
            return False
        if not bool(bad):
            return False
        self.skipped += 1
        if self.skipped > self.max_bad_steps:
            self.first_bad = torch.full_like(self.first_bad, step)
            self.bad_input = ~torch.isfinite(x.detach()).all()
            self.check()
        return True

    def check(self) -> None:
        """Raise :class:`TrainingDivergedError` naming the epoch (1-based) and step when a loss was non-finite."""
        step, epoch = int(self.first_bad), self.epoch
        if step < 0:
            return
        where = "the input batch itself holds NaN/inf (check the data and its normalization)" \
            if bool(self.bad_input) else "the model's output became NaN/inf"
        skipped = f" after skipping {self.max_bad_steps} bad step(s) (train.max_bad_steps)" if self.max_bad_steps else ""
        raise TrainingDivergedError(f"training diverged: non-finite loss at epoch {epoch + 1}, step {step + 1}"
                                    f"{skipped}; {where}. Stopped before saving this epoch: {_ADVICE}")

    def blame(self, err: BaseException, step: int, model: nn.Module, x: torch.Tensor) -> None:
        """Called when the augmentation failed at ``step``: raise the divergence (naming the model's
        non-finite loss / weights, not the relevance) when there is one; otherwise return (the caller re-raises)."""
        self.check()
        epoch = self.epoch
        bad = _nonfinite_weights(model)
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise TrainingDivergedError(
                f"training diverged: the model's weights ({', '.join(bad[:3])}{more}) are NaN/inf at epoch "
                f"{epoch + 1}, step {step + 1}, so its output and the relevance RelDrop needs are too ({err}). "
                f"Stopped before saving this epoch: {_ADVICE}") from err
        if not _output_finite(model, x):
            raise TrainingDivergedError(
                f"training diverged: the model's output (eval mode) is NaN/inf for a finite input batch at epoch "
                f"{epoch + 1}, step {step + 1} (its weights or BatchNorm statistics grew too large), so the relevance RelDrop needs is too ({err}). "
                f"Stopped before saving this epoch: {_ADVICE}") from err


def guard_for(cfg: Any, device: torch.device) -> DivergenceGuard:
    """The guard of a run config (``train.max_bad_steps``, absent in old configs: 0)."""
    return DivergenceGuard(int(cfg["train"].get("max_bad_steps") or 0), device)

"""The training curves of reldrop compare (curves.png) and their moving average."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reldrop.viz.curves import moving_average, plot_curves


def test_moving_average() -> None:
    y = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    ma = moving_average(y, 3)
    assert np.allclose(ma, [5, 10, 20, 30, 40, 45])  # centred, shrinking at the ends
    assert np.allclose(moving_average(y, 5)[2], 20) and np.allclose(moving_average(y, 4)[0], 10)
    assert np.allclose(moving_average(y, 1), y)


@pytest.mark.parametrize("epochs", [2, 12])
def test_plot_curves_short_and_long_runs(tmp_path: Path, epochs: int) -> None:
    """curves.png for runs shorter than two smoothing windows (plain mean per epoch) and longer
    ones (moving average); seeds give a band. The figure is a real PNG of the expected size."""
    rng = torch.Generator().manual_seed(0)
    runs = [{"variant": v, "metrics": [{"epoch": e + 1, "train_acc": 30 + 3 * e + float(torch.rand(1, generator=rng)),
                                        "test_acc": 25 + 2 * e + float(torch.rand(1, generator=rng))}
                                       for e in range(epochs)]}
            for v in ("baseline", "RelDrop") for _ in range(2)]
    path = plot_curves(runs, tmp_path / "curves.png", title="t")
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (1440, 552)

"""Mixup / CutMix as training augmentations: soft-target loss in the loop and an exact resume."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reldrop.train.loop import METRIC_KEYS, train


def _rows(run_dir: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixing_trains_and_resumes_exactly(tmp_path: Path, make_cfg: Any, name: str) -> None:
    over = dict(aug__name=name, aug__p=1.0, train__epochs=3, data__subset=120, data__test_subset=50)
    a = _rows(train(make_cfg(tmp_path / "full", **over), quiet=True)["run_dir"])
    plain = _rows(train(make_cfg(tmp_path / "plain", **dict(over, aug__name="none")), quiet=True)["run_dir"])
    # the soft-target loss of mixed batches differs from the plain run's loss on the same batches
    assert a[0]["train_loss"] != pytest.approx(plain[0]["train_loss"], rel=1e-6)
    assert all(r["aug_enabled"] and r["aug_p"] == 1.0 for r in a)
    cfg = make_cfg(tmp_path / "half", **over)
    train(cfg, quiet=True, stop_after=1)
    b = _rows(train(cfg, resume=True, quiet=True)["run_dir"])
    assert [{k: r[k] for k in METRIC_KEYS} for r in a] == [{k: r[k] for k in METRIC_KEYS} for r in b]


def test_mixing_config_errors(tmp_path: Path, make_cfg: Any) -> None:
    with pytest.raises(ValueError, match="unknown for aug.name 'mixup'"):
        train(make_cfg(tmp_path / "a", aug__name="mixup", aug__kwargs={"beta": 1.0}, train__epochs=1), quiet=True)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        train(make_cfg(tmp_path / "b", aug__name="cutmix", aug__kwargs={"alpha": 0.0}, train__epochs=1), quiet=True)

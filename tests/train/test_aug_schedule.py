"""aug.count / max_count / value="rand" wiring, aug.stop_epoch and aug.p_schedule, and their exact resume."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import reldrop
from reldrop.train.aug_schedule import AugState, aug_state
from reldrop.train.config import DEFAULTS, load_config
from reldrop.augment import RandomErasing
from reldrop.train.factory import build_augmentation
from reldrop.runs import load_checkpoint
from reldrop.train.loop import METRIC_KEYS, train


def _rows(run_dir: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_aug_state_stop_epoch_and_linear_ramp() -> None:
    aug = dict(DEFAULTS["aug"], start_epoch=2, stop_epoch=7, p_schedule={"start": 0.1, "end": 0.5, "epochs": 4})
    got = [aug_state(aug, e) for e in range(9)]
    assert [s.enabled for s in got] == [False, False, True, True, True, True, True, False, False]
    assert [s.p for s in got] == pytest.approx([0.1, 0.1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5])
    assert aug_state(DEFAULTS["aug"], 0) == AugState(True, None)  # no schedule: p untouched
    assert aug_state(dict(aug, p_schedule={"start": 0.0, "end": 0.3, "epochs": 0}), 2).p == 0.3


@pytest.mark.parametrize("over, match", [
    (["aug.stop_epoch=-1"], "stop_epoch"),
    (["aug.start_epoch=3", "aug.stop_epoch=3"], "stop_epoch"),
    (["aug.p_schedule={start: 0, end: 1.5, epochs: 3}"], "p_schedule.end"),
    (["aug.p_schedule={start: 0, end: 1}"], "p_schedule"),
    (["aug.p_schedule={start: 0, end: 1, epochs: -2}"], "p_schedule.epochs"),
    (["aug.count=0"], "aug.count"),
    (["aug.count=3", "aug.max_count=2"], "max_count"),
])
def test_schedule_and_count_config_errors(over: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(None, over)


def test_count_max_count_and_rand_reach_both_augmentations() -> None:
    model = reldrop.models.build("small_cnn", num_classes=10, in_channels=1, width=4)
    aug_cfg = dict(DEFAULTS["aug"], count=2, max_count=3, value="rand", p=1.0)
    re = build_augmentation(dict(aug_cfg, name="re"), model, "image", generator=torch.Generator().manual_seed(0))
    assert isinstance(re, RandomErasing) and (re.count, re.max_count, re.value) == (2, 3, "rand")
    x = torch.randn(4, 1, 16, 16)
    expected, _ = reldrop.random_erase(x, p=1.0, count=2, max_count=3, value="rand",
                                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(re(x, torch.zeros(4, dtype=torch.long)), expected)
    rd = build_augmentation(dict(aug_cfg, name="reldrop"), model, "image")
    assert isinstance(rd, reldrop.RelDrop) and (rd.count, rd.max_count, rd.value) == (2, 3, "rand")
    with pytest.raises(ValueError, match="apply to images"):
        build_augmentation(dict(aug_cfg, name="reldrop"), model, "points")


def test_stop_epoch_and_p_schedule_resume_exactly(tmp_path: Path, make_cfg: Any) -> None:
    over = dict(aug__name="re", aug__start_epoch=1, aug__stop_epoch=4, aug__p_schedule={"start": 0.2, "end": 0.8,
                                                                                        "epochs": 2},
                train__epochs=5, data__subset=100, data__test_subset=50)
    full = train(make_cfg(tmp_path / "full", **over), quiet=True)
    a = _rows(full["run_dir"])
    assert [r["aug_enabled"] for r in a] == [False, True, True, True, False]
    assert [r["aug_p"] for r in a] == pytest.approx([0.2, 0.2, 0.5, 0.8, 0.8])
    assert [r["aug_time"] > 0 for r in a] == [False, True, True, True, False]
    cfg = make_cfg(tmp_path / "half", **over)
    train(cfg, quiet=True, stop_after=2)  # "killed" mid-ramp
    assert load_checkpoint(Path(cfg["out"]) / "last.pt")["config"]["aug"]["p_schedule"]["end"] == 0.8
    b = _rows(train(cfg, resume=True, quiet=True)["run_dir"])
    keys = (*METRIC_KEYS, "aug_enabled", "aug_p")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]


def test_compare_reuses_runs_saved_before_the_new_aug_keys(tmp_path: Path) -> None:
    from reldrop.runs import RunConfigMismatchError
    from reldrop.train.config import check_run_config
    from reldrop.train.config import dump_config

    cfg = load_config(None, ["aug.name=re"])
    old = json.loads(json.dumps(cfg))
    for key in ("count", "max_count", "stop_epoch", "p_schedule"):  # a config saved before these keys existed
        del old["aug"][key]
    run = tmp_path / "seed0"
    run.mkdir()
    dump_config(old, run / "config.yaml")
    torch.save({"config": old}, run / "last.pt")
    check_run_config(run, cfg)  # the defaults keep the old behaviour: the same run
    with pytest.raises(RunConfigMismatchError, match="aug.count"):
        check_run_config(run, load_config(None, ["aug.name=re", "aug.count=2"]))

"""benchmarks/study_table.py (the statistics of docs/decoy_sweep.md and docs/effnet_fewshot.md) on a
fake archived study: runs are found by compare's folder layout (no runs.csv needed), unfinished ones
are counted as missing, the paired tests and the Holm correction match reldrop.stats."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CONFIG = ROOT / "configs" / "effnet_fewshot" / "ipc50.yaml"  # 60 epochs, six variants, seeds 0-4


def _archived_run(run: Path, epoch: int, test_acc: float, train_acc: float, finished: bool = True) -> None:
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": epoch, "test_acc": test_acc - 1.0,
                                                   "train_clean_acc": train_acc}) + "\n")
    (run / "test_sets.json").write_text(json.dumps({"sets": {"full": {"acc": test_acc}}}))
    if finished:
        (run / "finished.json").write_text(json.dumps({"epoch": epoch, "checkpoint_sha256": "0" * 64}))


def test_rows_of_a_partial_archived_study(tmp_path: Path) -> None:
    import effnet_fewshot as ef
    import study_table as st

    from reldrop.stats import holm, paired_test

    out = tmp_path / "ipc50"
    base = {s: 60.0 + s for s in range(5)}
    re_ = {s: 61.0 + s + 0.1 * (-1) ** s for s in range(5)}
    rel = {s: 59.0 + s + 0.3 * s for s in range(3)}
    for s in range(5):
        _archived_run(out / "baseline" / f"seed{s}", 60, base[s], 99.5)
        _archived_run(out / "RE" / f"seed{s}", 60, re_[s], 98.0)
    for s in range(3):
        _archived_run(out / "RelDrop" / f"seed{s}", 60, rel[s], 97.0)
    _archived_run(out / "RelDrop" / "seed3", 40, 10.0, 10.0)  # stopped after epoch 40: missing
    _archived_run(out / "CutMix" / "seed0", 60, 10.0, 10.0, finished=False)  # no checkpoint, no marker: missing
    rows = st.study_rows([("ipc50", CONFIG, out)], ef.METRICS, headline="clean", extra={"ipc50": {"images_per_class": 50}})
    by = {r["variant"]: r for r in rows}
    assert list(by) == ["baseline", "RE", "RelDrop", "CutMix", "Mixup", "baseline equal compute"]
    assert [by[v]["n"] for v in by] == [5, 5, 3, 0, 0, 0]
    assert [by[v]["missing"] for v in by] == [0, 0, 2, 5, 5, 5]
    assert by["RE"]["clean_mean"] == pytest.approx(np.mean(list(re_.values())), rel=1e-12)
    assert by["baseline"]["gap_clean_mean"] == pytest.approx(99.5 - np.mean(list(base.values())), rel=1e-12)
    t_re = paired_test(list(re_.values()), list(base.values()))
    t_rel_base = paired_test([rel[s] for s in range(3)], [base[s] for s in range(3)])
    t_rel_re = paired_test([rel[s] for s in range(3)], [re_[s] for s in range(3)])
    assert by["RE"]["p_vs_baseline"] == pytest.approx(t_re.p, rel=1e-9)
    assert by["RelDrop"]["diff_vs_re"] == pytest.approx(t_rel_re.diff_mean, rel=1e-9)
    expected = holm([t_re.p, t_rel_base.p, t_rel_re.p])  # the three tests the table holds, in its order
    got = [by["RE"]["p_holm_vs_baseline"], by["RelDrop"]["p_holm_vs_baseline"], by["RelDrop"]["p_holm_vs_re"]]
    assert got == pytest.approx(expected, rel=1e-9)
    assert by["RE"]["p_holm_vs_re"] is None and by["CutMix"]["p_vs_baseline"] is None
    lines = st.readings(rows)
    assert len(lines) == 3 and lines[0].startswith(f"- ipc50: RE − the baseline: {t_re.diff_mean:+.2f} points")
    assert all(("**significant**" in ln) == (p < 0.05) for ln, p in zip(lines, expected))
    png = ef.figure(rows, tmp_path / "fig.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_an_arm_that_never_ran_is_a_clear_error(tmp_path: Path) -> None:
    import effnet_fewshot as ef
    import study_table as st

    with pytest.raises(FileNotFoundError, match="reldrop compare --config"):
        st.study_rows([("ipc50", CONFIG, tmp_path / "nope")], ef.METRICS, headline="clean")

"""Issue 19 item 7: the training log records RelDrop's fallback share per epoch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reldrop.train.loop import train


def test_metrics_log_has_the_fallback_share_per_epoch(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, aug__name="reldrop", data__subset=100, data__test_subset=50)
    res = train(cfg, quiet=True)
    rows = [json.loads(line) for line in (Path(res["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["aug_selected"] > 0
        assert 0.0 <= row["aug_fallback_share"] <= 1.0
        assert row["aug_fallback_share"] == row["aug_fallback"] / row["aug_selected"]

"""reldrop evaluate's metric records: one per metric, the default selections, the summary parts."""
from __future__ import annotations

from reldrop.commands.evaluate.catalog import DECOY_PREFIX, METRICS, Metric, default_metrics


def test_one_record_per_metric_in_compute_order() -> None:
    assert list(METRICS) == ["acc", "corruption", "rra", "morf", "channel_auc", "heatmaps", "decoy", "flipping",
                             "zeroshot"]
    for name, m in METRICS.items():
        assert isinstance(m, Metric) and m.name == name and callable(m.function)
        assert m.modalities and set(m.modalities) <= {"image", "points"}
    assert [n for n, m in METRICS.items() if "points" in m.modalities] == ["acc", "flipping"]


def test_default_selections() -> None:
    assert default_metrics("image") == ["acc", "corruption", "rra", "morf", "channel_auc", "heatmaps"]
    assert default_metrics("points") == ["acc", "flipping"]
    assert default_metrics("image", DECOY_PREFIX + "cifar10") == ["acc", "decoy"]
    assert default_metrics("text") == ["acc"]


def test_summary_parts() -> None:
    assert METRICS["acc"].summary is not None and METRICS["acc"].summary({"accuracy": 91.234}, True) == ["acc 91.23%"]
    z = {"r": {"accuracy": 80.0}, "o": {"auroc": 0.8333}}
    zs = METRICS["zeroshot"].summary
    assert zs is not None and zs(z, True) == ["ImageNet-R 80.00%", "ImageNet-O AUROC 0.833"] and zs(z, False) == []
    assert METRICS["heatmaps"].summary is None and METRICS["channel_auc"].summary is None

"""Evaluation metrics: accuracy, Relevance Rank Accuracy, region perturbation, channel-relevance
AUC, zero-shot / OOD evaluation. All batched torch on the tensors' device.

Point-cloud flipping lives in :mod:`reldrop.metrics.flipping`.
"""
from .accuracy import accuracy_counts, evaluate_accuracy
from .perturbation import ORDERS, RegionPerturbationResult, curve_auc, region_perturbation
from .rra import RRAMeter, RRASummary, relevance_rank_accuracy, summarize_rra

__all__ = [
    "relevance_rank_accuracy", "summarize_rra", "RRASummary", "RRAMeter",
    "region_perturbation", "RegionPerturbationResult", "curve_auc", "ORDERS",
    "evaluate_accuracy", "accuracy_counts",
]

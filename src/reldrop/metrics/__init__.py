"""Evaluation metrics: accuracy, Relevance Rank Accuracy, region perturbation, channel-relevance
AUC, zero-shot / OOD evaluation. All batched torch on the tensors' device.

Point-cloud flipping lives in :mod:`reldrop.metrics.flipping`.
"""
from .accuracy import accuracy_counts, evaluate_accuracy
from .channel_auc import channel_auc, channel_relevance, layer_channel_auc, relative_auc_change
from .perturbation import ORDERS, RegionPerturbationResult, curve_auc, region_perturbation
from .rra import RRAMeter, RRASummary, relevance_rank_accuracy, summarize_rra
from .zeroshot import list_wnids, max_softmax, ood_detection, subset_accuracy, subset_indices

__all__ = [
    "relevance_rank_accuracy", "summarize_rra", "RRASummary", "RRAMeter",
    "region_perturbation", "RegionPerturbationResult", "curve_auc", "ORDERS",
    "evaluate_accuracy", "accuracy_counts",
    "channel_relevance", "channel_auc", "layer_channel_auc", "relative_auc_change",
    "subset_indices", "list_wnids", "subset_accuracy", "max_softmax", "ood_detection",
]

"""Diagnostics of synthetic sets: update-signal similarity, k-NN manifold precision / recall /
coverage, t-SNE plots, per-segment statistics of sequential sets, accuracy-versus-IPC plots, the
ISA paper's hard-predicts-easy diagnostic."""

from datadistill.analysis.isa import HardEasy, hard_easy_losses, hard_easy_summary, hard_predicts_easy
from datadistill.analysis.metrics import (
    embed,
    feature_network,
    knn_radii,
    manifold_metrics,
    subsample,
    update_signal_similarity,
)
from datadistill.analysis.plots import (
    accuracy_vs_ipc_plot,
    load_accuracy_results,
    segment_plot,
    tsne_embedding,
    tsne_plot,
)
from datadistill.analysis.report import analyze, format_report

__all__ = ["HardEasy", "accuracy_vs_ipc_plot", "analyze", "embed", "feature_network",
           "format_report", "hard_easy_losses", "hard_easy_summary", "hard_predicts_easy",
           "knn_radii", "load_accuracy_results", "manifold_metrics", "segment_plot", "subsample",
           "tsne_embedding", "tsne_plot", "update_signal_similarity"]

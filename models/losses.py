"""The max-margin hinge loss of the deep embedding model (paper Sec. 4.1, Eq. 1).

    L(A, W) = max[0, Delta - Rel(A, W+) + Rel(A, W-)],   Delta = 0.4

The model's output row is [Rel(A, W+), Rel(A, W-_1), ..., Rel(A, W-_N)]; per sample the loss is summed over the
N negatives. The original implementation SUMS the per-sample losses over the batch (../shared/REFERENCE.md,
"Models"): reduction "sum" (default) reproduces it, reduction "mean" divides that sum by the batch size.

Several replicas (tf.distribute): Keras leaves a "sum" loss unscaled on each replica and all-reduces (sums) the
replicas' gradients, so the update is the gradient of the sum over the whole global batch, as on one device;
a "mean" loss is scaled by 1 / replicas on each replica (Keras' `scale_loss_for_distribution`), giving the
gradient of the global-batch mean. The logged loss is un-scaled by Keras the same way.
"""

from __future__ import annotations

import keras
from keras import ops

from models.layers import PACKAGE

# --loss-reduction value -> Keras reduction name.
REDUCTIONS = {"sum": "sum", "mean": "sum_over_batch_size"}


def hinge_terms(scores, margin: float):
    """(b, N + 1) cosines -> (b,) per-sample loss sum_j max(0, margin - cos_pos + cos_neg_j)."""
    positive = scores[:, :1]  # (b, 1)
    negatives = scores[:, 1:]  # (b, N)
    return ops.sum(ops.relu(margin - positive + negatives), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class HingeRankingLoss(keras.losses.Loss):
    """Hinge loss over [cos_pos, cos_neg_1..N] (paper Eq. 1); y_true is ignored (the positive is column 0).

    Args:
        margin: Delta (paper: 0.4).
        reduction: "sum" (original: summed over the batch) or "mean" (divided by the batch size); the Keras
            names "sum_over_batch_size" / "none" are accepted as well.
    """

    def __init__(self, margin: float = 0.4, reduction: str = "sum", name: str = "hinge_ranking_loss", **kwargs):
        super().__init__(name=name, reduction=REDUCTIONS.get(reduction, reduction), **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return hinge_terms(y_pred, self.margin)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin})
        return config

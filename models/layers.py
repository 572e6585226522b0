"""Custom layers of the deep embedding model (paper Sec. 4.1, Fig. 3), written with `keras.ops` only.

The semantic module is a Keras model with input shape (side_dim,). To run the positive and the N negative label
vectors of a batch through that one shared module in a single call, `StackLabels` folds them into one
(batch * (N + 1), side_dim) matrix, and `CosineRelevance` unfolds the label embeddings again and scores each
against the sample's audio embedding. Both layers are registered serializable, so a saved model loads with plain
`keras.saving.load_model(path)` once `models` is imported.
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "zsl_music"
# Keras 2's `dot(normalize=True)` (K.l2_normalize) guarded the norm with this epsilon on the squared norm.
L2_EPSILON = 1e-12


def l2_normalize(x, axis: int = -1):
    """x / sqrt(max(sum(x^2), 1e-12)) along `axis` (Keras 2 `K.l2_normalize`)."""
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, L2_EPSILON))


@keras.saving.register_keras_serializable(package=PACKAGE)
class StackLabels(keras.layers.Layer):
    """[positive (b, s), negatives (b, N, s)] -> (b * (N + 1), s).

    Rows are sample-major: row i * (N + 1) is sample i's positive, rows i * (N + 1) + 1 .. + N its negatives, so
    that `CosineRelevance(n_labels=N + 1)` can fold them back with a plain reshape.
    """

    def call(self, inputs):
        positive, negatives = inputs
        labels = ops.concatenate([ops.expand_dims(positive, 1), negatives], axis=1)  # (b, N + 1, s)
        return ops.reshape(labels, (-1, labels.shape[-1]))  # (b * (N + 1), s)

    def compute_output_shape(self, input_shapes):
        positive_shape, negatives_shape = input_shapes
        if positive_shape[0] is None or negatives_shape[1] is None:
            rows = None
        else:
            rows = positive_shape[0] * (negatives_shape[1] + 1)
        return (rows, positive_shape[-1])


@keras.saving.register_keras_serializable(package=PACKAGE)
class CosineRelevance(keras.layers.Layer):
    """Rel(A, W) = y_A . y_W / (|y_A| |y_W|) (paper Sec. 4.1) for each sample's `n_labels` label embeddings.

    Inputs: audio embeddings (b, d) and label embeddings (b * n_labels, d) in `StackLabels` order.
    Output: (b, n_labels) cosine similarities; column 0 is the positive label, columns 1.. the negatives.
    """

    def __init__(self, n_labels: int, **kwargs):
        super().__init__(**kwargs)
        if int(n_labels) < 1:
            raise ValueError(f"CosineRelevance needs n_labels >= 1, got {n_labels}")
        self.n_labels = int(n_labels)

    def call(self, inputs):
        audio, labels = inputs
        labels = ops.reshape(labels, (-1, self.n_labels, labels.shape[-1]))  # (b, K, d)
        audio = ops.expand_dims(l2_normalize(audio), 1)  # (b, 1, d)
        return ops.sum(audio * l2_normalize(labels), axis=-1)  # (b, K)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], self.n_labels)

    def get_config(self):
        config = super().get_config()
        config.update({"n_labels": self.n_labels})
        return config

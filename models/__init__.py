"""Models of Choi et al., "Zero-shot Learning for Audio-based Music Classification and Tagging"
(ISMIR 2019).

    build_audio_module()                  audio CNN (Sec. 4.1, Fig. 3): (130, 128) log-mel -> 100-d
    build_semantic_module(side_dim)       one Dense(100) over a label's side vector (Sec. 4.1)
    build_embedding_model(side_dim, N)    [mel, positive, negatives] -> N + 1 cosines (Sec. 4.1)
    build_classification_model(n_labels)  audio module + Dense(n_labels, sigmoid) (Sec. 4.2)
    HingeRankingLoss, DecaySGD            the loss (Eq. 1) and optimizer (SGD with Keras-2 decay)

Details follow the original implementation (docs/original.md, "Models"), in `keras.ops` only (any
Keras backend). Importing this package registers the layers, the loss and the optimizer, so a saved
`model.keras` loads with plain `keras.saving.load_model(path)`.
"""

from __future__ import annotations

import keras
from keras import ops

from preprocess.frontend import N_MELS, SEGMENT_FRAMES

EMBEDDING_DIM = 100  # the joint audio/label embedding space (original: 100)
L2_WEIGHT = 1e-5  # L2 kernel regularizer of every convolution (original)
# (filters, kernel size, max-pool size after ReLU); the last convolution has no ReLU and no pooling.
AUDIO_CONV_BLOCKS = ((128, 4, 4), (128, 4, 4), (128, 4, 4), (128, 2, 2))
AUDIO_MODULE = "audio_module"
SEMANTIC_MODULE = "semantic_module"
CLASSIFIER = "classifier"
PACKAGE = "zsl_music"  # the name saved models refer to: keep it
L2_EPSILON = 1e-12  # Keras 2's K.l2_normalize guard on the squared norm
REDUCTIONS = {"sum": "sum", "mean": "sum_over_batch_size"}  # --loss-reduction -> Keras reduction


# ---- The modules (paper Sec. 4.1, Fig. 3) --------------------------------------------------------
def build_audio_module(n_frames: int = SEGMENT_FRAMES, n_mels: int = N_MELS) -> keras.Model:
    """(b, 130, 128) -> (b, 100): four Conv1D(128, k) - ReLU - MaxPool1D(p) blocks, (k, p) = (4, 4),
    (4, 4), (4, 4), (2, 2), then Conv1D(100, 1) and a global average over time (242,788 parameters).

    The convolutions run over time with the mel bins as channels (the paper's "1D convolutional
    layers with a 2D filter"): padding 'same', bias, he_uniform, L2(1e-5); no batch norm, no
    dropout.
    """

    def conv(filters, kernel, name):
        return keras.layers.Conv1D(
            filters,
            kernel,
            padding="same",
            kernel_initializer="he_uniform",
            kernel_regularizer=keras.regularizers.L2(L2_WEIGHT),
            name=name,
        )

    mel = keras.Input(shape=(n_frames, n_mels), name="mel")
    x = mel
    for i, (filters, kernel, pool) in enumerate(AUDIO_CONV_BLOCKS, start=1):
        x = conv(filters, kernel, f"conv{i}")(x)  # (b, t, 128)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling1D(pool, name=f"pool{i}")(x)  # (b, t // pool, 128)
    x = conv(EMBEDDING_DIM, 1, f"conv{len(AUDIO_CONV_BLOCKS) + 1}")(x)  # (b, t', 100), linear
    # (b, 100)
    return keras.Model(
        mel, keras.layers.GlobalAveragePooling1D(name="average")(x), name=AUDIO_MODULE
    )


def build_semantic_module(side_dim: int) -> keras.Model:
    """(b, side_dim) -> (b, 100): one linear Dense(100) with bias, shared by the positive and the
    negative labels."""
    if int(side_dim) < 1:
        raise ValueError(f"side_dim must be >= 1, got {side_dim}")
    side = keras.Input(shape=(int(side_dim),), name="side_info")
    return keras.Model(
        side, keras.layers.Dense(EMBEDDING_DIM, name="label_dense")(side), name=SEMANTIC_MODULE
    )


def l2_normalize(x, axis: int = -1):
    """x / sqrt(max(sum(x^2), 1e-12)) along `axis` (Keras 2 `K.l2_normalize`)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), L2_EPSILON))


@keras.saving.register_keras_serializable(package=PACKAGE)
class StackLabels(keras.layers.Layer):
    """[positive (b, s), negatives (b, N, s)] -> (b * (N + 1), s), sample-major, so that one call of
    the shared semantic module embeds every label of the batch and `CosineRelevance` folds them back
    with a reshape."""

    def call(self, inputs):
        positive, negatives = inputs
        labels = ops.concatenate([ops.expand_dims(positive, 1), negatives], axis=1)  # (b, N + 1, s)
        return ops.reshape(labels, (-1, labels.shape[-1]))  # (b * (N + 1), s)

    def compute_output_shape(self, input_shapes):
        (b, side_dim) = input_shapes[0]
        n = input_shapes[1][1]
        return (None if b is None or n is None else b * (n + 1), side_dim)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CosineRelevance(keras.layers.Layer):
    """Rel(A, W) = y_A . y_W / (|y_A| |y_W|) (paper Sec. 4.1): audio (b, d) and
    `StackLabels`-ordered label embeddings (b * n_labels, d) -> (b, n_labels); column 0 is the
    positive, columns 1.. the negatives."""

    def __init__(self, n_labels: int, **kwargs):
        super().__init__(**kwargs)
        self.n_labels = int(n_labels)

    def call(self, inputs):
        audio, labels = inputs
        labels = ops.reshape(labels, (-1, self.n_labels, labels.shape[-1]))  # (b, K, d)
        # (b, K)
        return ops.sum(ops.expand_dims(l2_normalize(audio), 1) * l2_normalize(labels), axis=-1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], self.n_labels)

    def get_config(self):
        return {**super().get_config(), "n_labels": self.n_labels}


# ---- The two models ------------------------------------------------------------------------------
def build_embedding_model(
    side_dim: int, n_negatives: int = 1, n_frames: int = SEGMENT_FRAMES, n_mels: int = N_MELS
) -> keras.Model:
    """Deep embedding model (paper Sec. 4.1, Fig. 3), trained with `HingeRankingLoss`.

    Inputs "mel" (b, 130, 128), "positive" (b, side_dim), "negatives" (b, N, side_dim); output
    "relevance" (b, N + 1) = [cos(audio, pos), cos(audio, neg_1), ..., cos(audio, neg_N)].
    """
    if int(n_negatives) < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    side_dim, n_negatives = int(side_dim), int(n_negatives)
    audio_module = build_audio_module(n_frames, n_mels)
    semantic_module = build_semantic_module(side_dim)
    mel = keras.Input(shape=(n_frames, n_mels), name="mel")
    positive = keras.Input(shape=(side_dim,), name="positive")
    negatives = keras.Input(shape=(n_negatives, side_dim), name="negatives")
    labels = StackLabels(name="stack_labels")([positive, negatives])  # (b * (N + 1), side_dim)
    relevance = CosineRelevance(n_negatives + 1, name="relevance")(
        [audio_module(mel), semantic_module(labels)]
    )  # (b, 100), (b * (N + 1), 100) -> (b, N + 1)
    return keras.Model([mel, positive, negatives], relevance, name="embedding_model")


def build_classification_model(
    n_labels: int, n_frames: int = SEGMENT_FRAMES, n_mels: int = N_MELS
) -> keras.Model:
    """Classification model (paper Sec. 4.2): the audio module + Dense(n_labels, sigmoid)
    "classifier"; (b, 130, 128) -> (b, n_labels) probabilities of the seen labels (split["seen"]
    order), binary cross-entropy."""
    if int(n_labels) < 1:
        raise ValueError(f"n_labels must be >= 1, got {n_labels}")
    audio_module = build_audio_module(n_frames, n_mels)
    mel = keras.Input(shape=(n_frames, n_mels), name="mel")
    probabilities = keras.layers.Dense(int(n_labels), activation="sigmoid", name=CLASSIFIER)(
        audio_module(mel)
    )
    return keras.Model(mel, probabilities, name="classification_model")


def model_kind(model: keras.Model) -> str:
    """ "embedding" or "classification", from the model's layers (works on loaded models)."""
    names = {layer.name for layer in model.layers}
    for kind, layer in (("embedding", SEMANTIC_MODULE), ("classification", CLASSIFIER)):
        if layer in names:
            return kind
    raise ValueError(
        f"model {model.name!r} is neither an embedding nor a classification model of this project."
    )


def get_audio_module(model: keras.Model) -> keras.Model:
    """The audio module ((b, 130, 128) -> (b, 100)) of an embedding or classification model."""
    try:
        return model.get_layer(AUDIO_MODULE)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no {AUDIO_MODULE!r} sub-model.") from None


def get_semantic_module(model: keras.Model) -> keras.Model:
    """The semantic module ((b, side_dim) -> (b, 100)) of an embedding model."""
    try:
        return model.get_layer(SEMANTIC_MODULE)
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no {SEMANTIC_MODULE!r} sub-model: only the deep embedding "
            "model has label embeddings (a classification model scores seen labels only)."
        ) from None


# ---- Loss and optimizer (paper Sec. 4.1 Eq. 1, Sec. 4.3) -----------------------------------------
def hinge_terms(scores, margin: float):
    """(b, N + 1) cosines -> (b,) per-sample loss sum_j max(0, margin - cos_pos + cos_neg_j)."""
    return ops.sum(ops.relu(margin - scores[:, :1] + scores[:, 1:]), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class HingeRankingLoss(keras.losses.Loss):
    """L(A, W) = max[0, Delta - Rel(A, W+) + Rel(A, W-)] summed over the N negatives (paper Eq. 1,
    Delta = 0.4); y_true is ignored (column 0 of y_pred is the positive).

    reduction "sum" (the original: summed over the batch) or "mean" (divided by the batch size).
    Several replicas: Keras leaves a "sum" loss unscaled on each replica and sums their gradients,
    so a step equals one device's step on the global batch; a "mean" loss is scaled by 1 / replicas,
    giving the global mean.
    """

    def __init__(
        self,
        margin: float = 0.4,
        reduction: str = "sum",
        name: str = "hinge_ranking_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=REDUCTIONS.get(reduction, reduction), **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return hinge_terms(y_pred, self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DecaySGD(keras.optimizers.SGD):
    """SGD whose step size is learning_rate / (1 + decay * iterations): Keras 2's `decay` (paper:
    SGD, Nesterov momentum 0.9, lr 0.001, decay 1e-6).

    `learning_rate` stays the base rate, which ReduceLROnPlateau scales (as in Keras 2), and the
    decay applies on top in `update_step`. The base rate, the iteration counter and the momenta are
    optimizer variables: they are saved with the model and restored on resume.
    """

    def __init__(
        self,
        learning_rate=0.001,
        momentum=0.9,
        nesterov=True,
        decay=1e-6,
        name="decay_sgd",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, name=name, **kwargs
        )
        if decay < 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        self.decay = float(decay)

    def decayed(self, learning_rate, dtype="float32"):
        """learning_rate / (1 + decay * iterations) as a tensor of `dtype`."""
        steps = ops.cast(self.iterations, dtype)
        return ops.cast(learning_rate, dtype) / (1.0 + ops.cast(self.decay, dtype) * steps)

    def current_learning_rate(self) -> float:
        """The step size of the next update (the base rate after decay)."""
        return float(ops.convert_to_numpy(self.decayed(self.learning_rate)))

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(gradient, variable, self.decayed(learning_rate, variable.dtype))

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}

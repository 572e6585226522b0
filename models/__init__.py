"""Models of Choi et al., "Zero-shot Learning for Audio-based Music Classification and Tagging" (ISMIR 2019).

    build_audio_module(n_frames, n_mels)   audio CNN (paper Sec. 4.1, Fig. 3): (130, 128) mel -> 100-d embedding
    build_semantic_module(side_dim)        one Dense(100) over a label's side-information vector (Sec. 4.1)
    build_embedding_model(side_dim, N)     deep embedding model: [mel, positive, negatives] -> N + 1 cosines
    build_classification_model(n_labels)   audio module + Dense(n_labels, sigmoid) (Sec. 4.2, Table 4)
    get_audio_module(model), get_semantic_module(model)   the sub-models of a built or loaded model

Architecture details follow the original implementation (../shared/REFERENCE.md, "Models"). Importing this
package registers the custom layers, the hinge loss and the optimizer with Keras, so a saved `model.keras` loads
with plain `keras.saving.load_model(path)` (no custom_objects).

Embedding-model inputs (by name): "mel" (b, 130, 128) standardized log-mel crops, "positive" (b, side_dim) the
positive label's side vector, "negatives" (b, N, side_dim) the N negative labels' side vectors stacked in one
input (any N without changing the input list). Output (b, N + 1): [cos(audio, pos), cos(audio, neg_1..N)].
"""

from __future__ import annotations

import keras

from models.layers import CosineRelevance, StackLabels, l2_normalize
from models.losses import REDUCTIONS, HingeRankingLoss, hinge_terms
from models.optimizers import DecaySGD
from preprocess.store import N_MELS, SEGMENT_FRAMES

__all__ = [
    "EMBEDDING_DIM", "L2_WEIGHT", "AUDIO_MODULE", "SEMANTIC_MODULE", "CLASSIFIER",
    "build_audio_module", "build_semantic_module", "build_embedding_model", "build_classification_model",
    "get_audio_module", "get_semantic_module", "model_kind",
    "CosineRelevance", "StackLabels", "HingeRankingLoss", "DecaySGD", "REDUCTIONS", "hinge_terms", "l2_normalize",
]

EMBEDDING_DIM = 100  # size of the joint audio/label embedding space (original: 100)
L2_WEIGHT = 1e-5  # L2 kernel regularizer of every convolution (original)
# (filters, kernel size, max-pool size after ReLU); the last convolution has no ReLU and no pooling.
AUDIO_CONV_BLOCKS = ((128, 4, 4), (128, 4, 4), (128, 4, 4), (128, 2, 2))

AUDIO_MODULE = "audio_module"
SEMANTIC_MODULE = "semantic_module"
CLASSIFIER = "classifier"


def _conv(filters: int, kernel: int, name: str) -> keras.layers.Conv1D:
    """Conv1D as in the original: padding 'same', bias, he_uniform init, L2(1e-5) on the kernel."""
    return keras.layers.Conv1D(filters, kernel, padding="same", use_bias=True, kernel_initializer="he_uniform",
                               kernel_regularizer=keras.regularizers.L2(L2_WEIGHT), name=name)


def build_audio_module(n_frames: int = SEGMENT_FRAMES, n_mels: int = N_MELS) -> keras.Model:
    """Audio CNN of the deep embedding model (paper Sec. 4.1): (b, n_frames, n_mels) -> (b, 100).

    Four blocks Conv1D(128, k) - ReLU - MaxPool1D(p) with (k, p) = (4, 4), (4, 4), (4, 4), (2, 2), then
    Conv1D(100, 1) and global average pooling over time. The 1-D convolutions run over time with the 128 mel bins
    as channels (the paper's "1D convolutional layers with a 2D filter"). No batch norm, no dropout.
    242,788 trainable parameters for 128 mel bins.
    """
    mel = keras.Input(shape=(n_frames, n_mels), name="mel")
    x = mel
    for i, (filters, kernel, pool) in enumerate(AUDIO_CONV_BLOCKS, start=1):
        x = _conv(filters, kernel, f"conv{i}")(x)  # (b, t, 128)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling1D(pool, padding="valid", name=f"pool{i}")(x)  # (b, t // pool, 128)
    x = _conv(EMBEDDING_DIM, 1, f"conv{len(AUDIO_CONV_BLOCKS) + 1}")(x)  # (b, t', 100), linear
    embedding = keras.layers.GlobalAveragePooling1D(name="average")(x)  # (b, 100)
    return keras.Model(mel, embedding, name=AUDIO_MODULE)


def build_semantic_module(side_dim: int) -> keras.Model:
    """Semantic module (paper Sec. 4.1): one linear Dense(100) with bias over a (side_dim,) label vector.

    Shared by the positive and the negative labels. 4,100 parameters for 40-d instrument vectors, 30,100 for
    300-d GloVe vectors.
    """
    if int(side_dim) < 1:
        raise ValueError(f"side_dim must be >= 1, got {side_dim}")
    side = keras.Input(shape=(int(side_dim),), name="side_info")
    embedding = keras.layers.Dense(EMBEDDING_DIM, activation=None, use_bias=True, name="label_dense")(side)
    return keras.Model(side, embedding, name=SEMANTIC_MODULE)


def build_embedding_model(side_dim: int, n_negatives: int = 1, n_frames: int = SEGMENT_FRAMES,
                          n_mels: int = N_MELS) -> keras.Model:
    """Deep embedding model (paper Sec. 4.1, Fig. 3).

    Inputs: "mel" (b, n_frames, n_mels), "positive" (b, side_dim), "negatives" (b, n_negatives, side_dim).
    Output "relevance" (b, n_negatives + 1) = [cos(audio, pos), cos(audio, neg_1), ..., cos(audio, neg_N)],
    trained with `HingeRankingLoss` (margin 0.4).
    """
    if int(n_negatives) < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    side_dim, n_negatives = int(side_dim), int(n_negatives)
    audio_module = build_audio_module(n_frames, n_mels)
    semantic_module = build_semantic_module(side_dim)

    mel = keras.Input(shape=(n_frames, n_mels), name="mel")
    positive = keras.Input(shape=(side_dim,), name="positive")
    negatives = keras.Input(shape=(n_negatives, side_dim), name="negatives")

    audio = audio_module(mel)  # (b, 100)
    labels = StackLabels(name="stack_labels")([positive, negatives])  # (b * (N + 1), side_dim)
    label_embeddings = semantic_module(labels)  # (b * (N + 1), 100), one shared module
    relevance = CosineRelevance(n_negatives + 1, name="relevance")([audio, label_embeddings])  # (b, N + 1)
    return keras.Model([mel, positive, negatives], relevance, name="embedding_model")


def build_classification_model(n_labels: int, n_frames: int = SEGMENT_FRAMES, n_mels: int = N_MELS) -> keras.Model:
    """Classification model (paper Sec. 4.2): the audio module + Dense(n_labels, sigmoid) named "classifier".

    Input "mel" (b, n_frames, n_mels); output (b, n_labels) label probabilities in split["seen"] order; trained
    with binary cross-entropy.
    """
    if int(n_labels) < 1:
        raise ValueError(f"n_labels must be >= 1, got {n_labels}")
    audio_module = build_audio_module(n_frames, n_mels)
    mel = keras.Input(shape=(n_frames, n_mels), name="mel")
    probabilities = keras.layers.Dense(int(n_labels), activation="sigmoid", name=CLASSIFIER)(audio_module(mel))
    return keras.Model(mel, probabilities, name="classification_model")


def model_kind(model: keras.Model) -> str:
    """"embedding" or "classification", from the model's layers (works on loaded models)."""
    names = {layer.name for layer in model.layers}
    if SEMANTIC_MODULE in names:
        return "embedding"
    if CLASSIFIER in names:
        return "classification"
    raise ValueError(f"model {model.name!r} is neither an embedding nor a classification model of this project.")


def get_audio_module(model: keras.Model) -> keras.Model:
    """The audio module ((b, 130, 128) -> (b, 100)) of an embedding or classification model (built or loaded)."""
    try:
        return model.get_layer(AUDIO_MODULE)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no {AUDIO_MODULE!r} sub-model.") from None


def get_semantic_module(model: keras.Model) -> keras.Model:
    """The semantic module ((b, side_dim) -> (b, 100)) of an embedding model (built or loaded)."""
    try:
        return model.get_layer(SEMANTIC_MODULE)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no {SEMANTIC_MODULE!r} sub-model: only the deep embedding "
                         "model has label embeddings (a classification model scores seen labels only).") from None

"""Tests of models/: architecture and parameter counts (docs/original.md "Models"), the hinge loss
on hand-computed values, the Keras-2 learning-rate decay with ReduceLROnPlateau, the training
backup, save -> load -> predict."""

from __future__ import annotations

import types

import keras
import numpy as np
import pytest

import models
from config import TrainConfig
from models.callbacks import TrainingBackup, training_callbacks


def n_trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def random_inputs(batch=5, side_dim=40, n_negatives=1, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "mel": rng.normal(size=(batch, 130, 128)).astype("float32"),
        "positive": rng.normal(size=(batch, side_dim)).astype("float32"),
        "negatives": rng.normal(size=(batch, n_negatives, side_dim)).astype("float32"),
    }


def cosine(a, b):
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# --------------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------------
def test_audio_module_parameters_and_layers():
    audio = models.build_audio_module()
    assert audio.name == "audio_module"
    assert audio.input_shape == (None, 130, 128) and audio.output_shape == (None, 100)
    # 3 x (4*128*128 + 128) + (2*128*128 + 128) + (128*100 + 100)
    assert n_trainable(audio) == 3 * 65_664 + 32_896 + 12_900 == 242_788
    convs = [layer for layer in audio.layers if isinstance(layer, keras.layers.Conv1D)]
    assert [(c.filters, c.kernel_size[0]) for c in convs] == [
        (128, 4),
        (128, 4),
        (128, 4),
        (128, 2),
        (100, 1),
    ]
    for conv in convs:
        assert conv.padding == "same" and conv.use_bias
        assert isinstance(conv.kernel_initializer, keras.initializers.HeUniform)
        assert conv.kernel_regularizer.l2 == pytest.approx(1e-5)
        # ReLU is a separate layer; the last conv stays linear
        assert conv.activation.__name__ == "linear"
    pools = [
        layer.pool_size[0] for layer in audio.layers if isinstance(layer, keras.layers.MaxPooling1D)
    ]
    assert pools == [4, 4, 4, 2]
    assert [
        layer.output.shape[1]
        for layer in audio.layers
        if isinstance(layer, keras.layers.MaxPooling1D)
    ] == [32, 8, 2, 1]
    kinds = {type(layer).__name__ for layer in audio.layers}
    assert not kinds & {"BatchNormalization", "Dropout"}
    assert isinstance(audio.layers[-1], keras.layers.GlobalAveragePooling1D)


@pytest.mark.parametrize("side_dim, params", [(40, 4_100), (300, 30_100)])
def test_semantic_module_parameters(side_dim, params):
    semantic = models.build_semantic_module(side_dim)
    assert semantic.name == "semantic_module" and n_trainable(semantic) == params
    assert semantic.output_shape == (None, 100)
    dense = semantic.get_layer("label_dense")
    assert dense.activation.__name__ == "linear" and dense.use_bias


def test_embedding_model_shares_one_semantic_module_and_outputs_cosines():
    model = models.build_embedding_model(40, n_negatives=3)
    # one semantic module for the positive and the negatives
    assert n_trainable(model) == 242_788 + 4_100
    assert [t.name for t in model.inputs] == ["mel", "positive", "negatives"]
    assert model.output_shape == (None, 4)
    x = random_inputs(batch=5, n_negatives=3)
    scores = model.predict(x, verbose=0)
    audio = models.get_audio_module(model).predict(x["mel"], verbose=0)
    semantic = models.get_semantic_module(model)
    pos = semantic.predict(x["positive"], verbose=0)
    neg = semantic.predict(x["negatives"].reshape(-1, 40), verbose=0).reshape(5, 3, 100)
    np.testing.assert_allclose(scores[:, 0], cosine(audio, pos), atol=1e-5)
    np.testing.assert_allclose(scores[:, 1:], cosine(audio[:, None], neg), atol=1e-5)
    assert np.all(np.abs(scores) <= 1 + 1e-6)


def test_classification_model():
    model = models.build_classification_model(125)
    assert n_trainable(model) == 242_788 + 100 * 125 + 125
    assert model.get_layer("classifier").activation.__name__ == "sigmoid"
    probabilities = model.predict(random_inputs(3)["mel"], verbose=0)
    assert probabilities.shape == (3, 125) and np.all((probabilities > 0) & (probabilities < 1))
    assert models.model_kind(model) == "classification"
    with pytest.raises(ValueError, match="only the deep embedding model has label embeddings"):
        models.get_semantic_module(model)


def test_bad_builder_arguments():
    with pytest.raises(ValueError, match="n_negatives must be >= 1"):
        models.build_embedding_model(40, n_negatives=0)
    with pytest.raises(ValueError, match="side_dim must be >= 1"):
        models.build_semantic_module(0)


# --------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------
SCORES = np.array([[0.5, 0.3, 0.6], [0.9, -0.2, 0.6]], dtype="float32")
# sample 1: max(0, .4 - .5 + .3) + max(0, .4 - .5 + .6) = 0.2 + 0.5; sample 2: 0 + max(0, .4 - .9 +
# .6) = 0.1


def test_hinge_loss_sum_and_mean_by_hand():
    target = np.zeros_like(SCORES)
    total = float(models.HingeRankingLoss(0.4, "sum")(target, SCORES))
    mean = float(models.HingeRankingLoss(0.4, "mean")(target, SCORES))
    assert total == pytest.approx(0.8, abs=1e-6)
    assert mean == pytest.approx(0.4, abs=1e-6)
    per_sample = keras.ops.convert_to_numpy(models.hinge_terms(SCORES, 0.4))
    np.testing.assert_allclose(per_sample, [0.7, 0.1], atol=1e-6)
    assert float(models.HingeRankingLoss(0.0, "sum")(target, SCORES)) == pytest.approx(
        0.1 + 0.0 + 0.0, abs=1e-6
    )


def test_hinge_loss_serializes():
    loss = models.HingeRankingLoss(0.3, "mean")
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, models.HingeRankingLoss) and again.margin == 0.3
    assert again.reduction == "sum_over_batch_size"


# --------------------------------------------------------------------------------------------------
# Learning rate: Keras-2 decay inside the optimizer, ReduceLROnPlateau on the base rate
# --------------------------------------------------------------------------------------------------
def sgd_steps(optimizer, variable, n):
    for _ in range(n):
        optimizer.apply_gradients([(keras.ops.ones(()), variable)])


def test_decay_applies_per_iteration():
    w = keras.Variable(1.0)
    optimizer = models.DecaySGD(learning_rate=0.1, momentum=0.0, decay=0.5)
    sgd_steps(optimizer, w, 3)
    # lr_t = 0.1 / (1 + 0.5 t) for t = 0, 1, 2 (gradient 1)
    assert float(w.numpy()) == pytest.approx(1 - 0.1 * (1 + 1 / 1.5 + 1 / 2.0), rel=1e-6)
    assert optimizer.current_learning_rate() == pytest.approx(0.1 / 2.5, rel=1e-6)
    # the base rate is untouched
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.1)


def test_nesterov_momentum_matches_keras2_formula():
    w = keras.Variable(1.0)
    optimizer = models.DecaySGD(learning_rate=0.1, momentum=0.9, nesterov=True, decay=0.0)
    sgd_steps(optimizer, w, 2)
    # Keras 2: v = m v - lr g; p = p + m v - lr g
    v1 = -0.1
    p1 = 1 + 0.9 * v1 - 0.1
    v2 = 0.9 * v1 - 0.1
    assert float(w.numpy()) == pytest.approx(p1 + 0.9 * v2 - 0.1, rel=1e-6)


def test_plateau_reduces_the_base_rate_and_decay_keeps_applying():
    w = keras.Variable(1.0)
    optimizer = models.DecaySGD(learning_rate=0.1, momentum=0.0, decay=0.1)
    holder = types.SimpleNamespace(optimizer=optimizer, stop_training=False)
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=0.2, patience=2, min_lr=0.005
    )
    plateau.set_model(holder)
    plateau.on_train_begin()
    sgd_steps(optimizer, w, 4)
    assert optimizer.current_learning_rate() == pytest.approx(0.1 / 1.4, rel=1e-6)

    logs = []
    # improvement, then 2 epochs without -> reduce by 0.2
    for epoch, val in enumerate([1.0, 1.0, 1.0]):
        log = {"val_loss": val}
        plateau.on_epoch_end(epoch, log)
        logs.append(log["learning_rate"])
    assert logs == pytest.approx([0.1, 0.1, 0.1])  # logged before the reduction of that epoch
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.02, rel=1e-6)
    # decay still applies
    assert optimizer.current_learning_rate() == pytest.approx(0.02 / 1.4, rel=1e-6)
    before = float(w.numpy())
    sgd_steps(optimizer, w, 1)
    # the step really uses it
    assert before - float(w.numpy()) == pytest.approx(0.02 / 1.4, rel=1e-5)

    # State survives a restart (fresh callback, TrainingBackup's counters restored after its
    # on_train_begin reset).
    state = {attr: getattr(plateau, attr) for attr in TrainingBackup.COUNTERS["ReduceLROnPlateau"]}
    assert state == {"best": 1.0, "wait": 0, "cooldown_counter": 0}
    resumed = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=0.2, patience=2, min_lr=0.005
    )
    resumed.set_model(holder)
    resumed.on_train_begin()
    for attr, value in state.items():
        setattr(resumed, attr, value)
    for epoch in (3, 4):
        resumed.on_epoch_end(epoch, {"val_loss": 1.0})
    # 0.004 floored at min_lr
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.005, rel=1e-6)
    for epoch in (5, 6, 7, 8):
        resumed.on_epoch_end(epoch, {"val_loss": 1.0})
    # stays at the floor
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.005, rel=1e-6)
    assert optimizer.current_learning_rate() == pytest.approx(0.005 / 1.5, rel=1e-6)


def test_training_backup_restores_variables_and_counters(tmp_path):
    """What an epoch's backup holds comes back into a fresh model and fresh callbacks: weights, the
    optimizer's iteration counter, base rate and momenta, and the counters Keras keeps in memory
    only."""
    config = TrainConfig(patience=3, plateau_patience=2, checkpoint_every=0)
    keras.utils.set_random_seed(0)

    def fresh():
        model = models.build_classification_model(3)
        model.compile(optimizer=models.DecaySGD(0.1, decay=0.5), loss="binary_crossentropy")
        model.optimizer.build(model.trainable_variables)
        callbacks, backup = training_callbacks(model, config, tmp_path)
        for callback in callbacks:
            callback.set_model(model)
            callback.on_train_begin()
        return model, callbacks, backup

    model, callbacks, backup = fresh()
    assert backup.initial_epoch == 0 and not backup.stopped
    mel, target = random_inputs(4)["mel"], np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    for epoch, val_loss in enumerate([2.0, 1.0, 1.5]):
        model.train_on_batch(mel, target)
        logs = {"loss": 1.0, "val_loss": val_loss}
        for callback in callbacks[1:]:  # TerminateOnNaN acts on batches
            callback.on_epoch_end(epoch, logs)
    counters = {
        type(cb).__name__: {
            a: getattr(cb, a) for a in TrainingBackup.COUNTERS.get(type(cb).__name__, ())
        }
        for cb in callbacks
    }
    assert counters["EarlyStopping"] == {
        "best": 1.0,
        "wait": 1,
        "best_epoch": 1,
        "stopped_epoch": 0,
    }
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "epoch_0002.npz",
        "state.json",
    ]
    assert [int(r.split(",")[0]) for r in (tmp_path / "log.csv").read_text().splitlines()[1:]] == [
        0,
        1,
        2,
    ]

    again, callbacks_again, backup_again = fresh()  # a rerun: new objects, reset counters
    assert backup_again.initial_epoch == 3
    backup_again.on_train_begin()
    for a, b in zip(
        model.weights + model.optimizer.variables,
        again.weights + again.optimizer.variables,
        strict=True,
    ):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(again.optimizer.iterations.numpy()) == 3
    assert again.optimizer.current_learning_rate() == pytest.approx(0.1 / 2.5)
    for callback in callbacks_again:
        name = type(callback).__name__
        assert {a: getattr(callback, a) for a in TrainingBackup.COUNTERS.get(name, ())} == counters[
            name
        ]
    for epoch in (3, 4):  # the restored counters go on: 3 epochs without improvement in all
        for callback in callbacks_again[1:]:
            callback.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 1.2})
    assert again.stop_training and callbacks_again[3].stopped_epoch == 4
    assert TrainingBackup(tmp_path / "backup", []).stopped


def test_decay_optimizer_serializes():
    optimizer = models.DecaySGD(learning_rate=0.01, momentum=0.9, decay=1e-6)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(again, models.DecaySGD)
    assert again.decay == 1e-6 and again.nesterov and again.momentum == 0.9


# --------------------------------------------------------------------------------------------------
# Save -> load -> predict
# --------------------------------------------------------------------------------------------------
def test_save_load_predict_and_submodules(tmp_path):
    model = models.build_embedding_model(40, n_negatives=2)
    model.compile(optimizer=models.DecaySGD(0.001, decay=1e-6), loss=models.HingeRankingLoss(0.4))
    x = random_inputs(4, n_negatives=2)
    model.fit(x, np.zeros((4, 3), "float32"), epochs=1, verbose=0)
    expected = model.predict(x, verbose=0)
    saver = keras.callbacks.ModelCheckpoint(
        tmp_path / "model.keras", monitor="val_loss", save_best_only=True
    )
    saver.set_model(model)
    saver.on_epoch_end(0, {"val_loss": 1.0})
    saved = (tmp_path / "model.keras").read_bytes()
    loaded = keras.saving.load_model(tmp_path / "model.keras")  # no custom_objects
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    assert isinstance(loaded.optimizer, models.DecaySGD) and isinstance(
        loaded.loss, models.HingeRankingLoss
    )
    assert int(loaded.optimizer.iterations.numpy()) == 1
    audio = models.get_audio_module(loaded)
    np.testing.assert_allclose(
        audio.predict(x["mel"], verbose=0),
        models.get_audio_module(model).predict(x["mel"], verbose=0),
        atol=1e-6,
    )
    semantic = models.get_semantic_module(loaded)
    assert semantic.input_shape == (None, 40)
    np.testing.assert_allclose(
        semantic.predict(x["positive"], verbose=0),
        models.get_semantic_module(model).predict(x["positive"], verbose=0),
        atol=1e-6,
    )
    assert models.model_kind(loaded) == "embedding"
    saver.on_epoch_end(1, {"val_loss": 1.5})  # no improvement: file untouched
    assert saver.best == 1.0 and (tmp_path / "model.keras").read_bytes() == saved


def test_classification_save_load(tmp_path):
    model = models.build_classification_model(7)
    model.compile(optimizer=models.DecaySGD(0.001), loss="binary_crossentropy")
    model.optimizer.build(model.trainable_variables)
    mel = random_inputs(2)["mel"]
    model.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras")
    np.testing.assert_allclose(
        loaded.predict(mel, verbose=0), model.predict(mel, verbose=0), atol=1e-6
    )
    assert models.get_audio_module(loaded).output_shape == (None, 100)

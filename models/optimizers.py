"""SGD with Keras-2-style learning-rate decay (paper Sec. 4.3: SGD, 0.9 Nesterov momentum, lr 0.001, decay 1e-6).

Keras 2 applied `decay` inside the optimizer, on top of its learning-rate variable:

    lr_t = lr / (1 + decay * t),   t = number of updates already applied (0 for the first update)

and Keras 2's ReduceLROnPlateau multiplied that *base* variable `lr` by its factor (floored at min_lr), so the
decay kept applying after a plateau reduction. `DecaySGD` keeps exactly that split: `optimizer.learning_rate` is
the base variable (which Keras 3's ReduceLROnPlateau reads and assigns, as Keras 2's did), and the decay factor
is applied in `update_step`. Keras 3 cannot change a `LearningRateSchedule` from ReduceLROnPlateau; no schedule is
needed here. The base learning rate, the iteration counter and the momenta are optimizer variables, so they are
saved with the model's weights and survive an interrupted-and-resumed run.
"""

from __future__ import annotations

import keras
from keras import ops

from models.layers import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class DecaySGD(keras.optimizers.SGD):
    """keras.optimizers.SGD whose step size is learning_rate / (1 + decay * iterations) (Keras 2 `decay`)."""

    def __init__(self, learning_rate=0.001, momentum=0.9, nesterov=True, decay=1e-6, name="decay_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, name=name, **kwargs)
        if decay < 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        self.decay = float(decay)

    def decayed(self, learning_rate, dtype="float32"):
        """learning_rate / (1 + decay * iterations), as a tensor of `dtype`."""
        learning_rate = ops.cast(learning_rate, dtype)
        if self.decay == 0:
            return learning_rate
        steps = ops.cast(self.iterations, dtype)
        return learning_rate / (1.0 + ops.cast(self.decay, dtype) * steps)

    def current_learning_rate(self) -> float:
        """The step size the next update will use (base learning rate after decay), as a Python float."""
        return float(ops.convert_to_numpy(self.decayed(self.learning_rate)))

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(gradient, variable, self.decayed(learning_rate, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"decay": self.decay})
        return config

"""Several devices for train.py (TensorFlow backend only): --strategy mirrored or multi-worker.

    mirrored      tf.distribute.MirroredStrategy over all GPUs of the machine; without GPUs, all
                  logical CPU devices
    multi-worker  MultiWorkerMirroredStrategy, the cluster from TF_CONFIG; every worker runs the
                  same command, the
                  chief (or worker 0) writes the run directory, the others a scratch copy in <run
                      dir>/.worker<i>

--batch-size is the global batch, split evenly over the replicas (pipeline.Sampler cuts an epoch's
last batch to a multiple of them); a step equals one device's step on the whole global batch
(models.HingeRankingLoss says why).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from config import ConfigError


def make_strategy(name: str):
    """The tf.distribute strategy of --strategy, or None for "default" (one device, any Keras
    backend)."""
    if name == "default":
        return None
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(
            f"--strategy {name} needs the TensorFlow backend; this is {keras.backend.backend()} "
            "(KERAS_BACKEND). Use --strategy default."
        )
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.MultiWorkerMirroredStrategy()


def replicas(strategy) -> int:
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def scope(strategy):
    """Build the model inside this (its variables are then mirrored)."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def output_dir(run_dir: Path, name: str) -> Path:
    """Where this process writes: the run directory, or <run dir>/.worker<i> for the other workers
    of a multi-worker run (their role read from TF_CONFIG as TensorFlow reads it, before TensorFlow
    starts)."""
    # without TF_CONFIG: one worker, the chief
    if name != "multi-worker" or not os.environ.get("TF_CONFIG"):
        return run_dir
    try:
        cluster = json.loads(os.environ["TF_CONFIG"])
        kind = cluster["task"]["type"]
        index = int(cluster["task"].get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(
            "TF_CONFIG of --strategy multi-worker must be JSON with a cluster and this process's "
            "task "
            "(https://www.tensorflow.org/guide/distributed_training)."
        ) from None
    chief = kind == "chief" or (
        kind == "worker" and index == 0 and "chief" not in cluster.get("cluster", {})
    )
    return run_dir if chief else run_dir / f".worker{index}"


def multi_worker_fixes(model, strategy) -> None:
    """Two Keras 3 (TF backend) failures under MultiWorkerMirroredStrategy with several workers
    (tensorflow/tensorflow#72388), worked around by patching two private Keras functions; gradients
    are untouched.

    1. Before `fit`, Keras reduces the first batch with strategy.reduce only to learn the input
       shapes, which
       fails on a nested (inputs, target) batch: the model is built from the first local replica's
           shard instead.
    2. After each step Keras averages the logged metrics with strategy.reduce(..., axis=0), which
       fails on
       scalars: scalars are averaged over the replicas with axis=None.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica
    if not getattr(original_reduce, "zsl_multi_worker_fix", False):

        def reduce_per_replica(values, strategy, reduction):
            if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
                strategy
            ):
                return tree.map_structure(
                    lambda v: strategy.reduce("MEAN", v, axis=0 if v.shape.rank else None), values
                )
            return original_reduce(values, strategy, reduction)

        reduce_per_replica.zsl_multi_worker_fix = True
        tf_trainer.reduce_per_replica = reduce_per_replica

    original_build = model._maybe_symbolic_build

    def local_shard(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local_shard, next(batches))
                break
        return original_build(iterator=None, data_batch=data_batch)

    model._maybe_symbolic_build = build

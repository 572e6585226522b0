"""Several devices for train.py: --strategy mirrored or multi-worker (TensorFlow backend), or
data-parallel (JAX backend).

    mirrored       tf.distribute.MirroredStrategy over all GPUs of the machine; without GPUs, all
                   logical CPU devices
    multi-worker   MultiWorkerMirroredStrategy, the cluster from TF_CONFIG; every worker runs the
                   same command, the chief (or worker 0) writes the run directory, the others a
                   scratch copy in <run dir>/.worker<i>
    data-parallel  keras.distribution.DataParallel over every device JAX sees (variables
                   replicated, each batch sharded). Several hosts (jax.distributed): every process
                   sets KERAS_DISTRIBUTION_JOB_ADDRESSES (the coordinator's host:port),
                   KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID and feeds its
                   part of every batch; process 0 writes the run directory, the others
                   <run dir>/.worker<i>

--batch-size is the global batch, split evenly over the replicas (pipeline.Sampler cuts an epoch's
last batch to a multiple of them); a step equals one device's step on the whole global batch
(models.HingeRankingLoss says why; under JAX the loss of the sharded batch is one global sum).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from config import ConfigError

# the Keras backend each strategy needs, and the strategies of each backend
BACKENDS = {"mirrored": "TensorFlow", "multi-worker": "TensorFlow", "data-parallel": "JAX"}
OTHERS = {"tensorflow": " or mirrored", "jax": " or data-parallel"}


def make_strategy(name: str):
    """The tf.distribute strategy or the Keras distribution of --strategy, or None for "default"
    (one device, any Keras backend)."""
    if name == "default":
        return None
    import keras

    if (backend := keras.backend.backend()) != BACKENDS[name].lower():
        raise ConfigError(
            f"--strategy {name} needs the {BACKENDS[name]} backend; this is {backend} "
            f"(KERAS_BACKEND). Use --strategy default{OTHERS.get(backend, '')}."
        )
    if name == "data-parallel":
        import jax

        if (
            os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
            and not jax.distributed.is_initialized()
        ):
            keras.distribution.initialize()  # jax.distributed, from KERAS_DISTRIBUTION_*
        # the batches come from our sampler, one part per process (process_part)
        return keras.distribution.DataParallel(auto_shard_dataset=False)
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.MultiWorkerMirroredStrategy()


def replicas(strategy) -> int:
    """Devices that share a batch (a Keras distribution counts them as model replicas)."""
    return (
        1
        if strategy is None
        else int(getattr(strategy, "num_model_replicas", 0) or strategy.num_replicas_in_sync)
    )


def process_part(name: str) -> tuple[int, int]:
    """(this process, processes): each process of a data-parallel run feeds its part of every
    global batch (Keras' JAX trainer assembles them); other strategies feed whole batches."""
    if name != "data-parallel":
        return (0, 1)
    import jax

    return (jax.process_index(), jax.process_count())


def scope(strategy):
    """Build the model and fit inside this (its variables are then mirrored or replicated; the JAX
    trainer reads the Keras distribution in fit)."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def output_dir(run_dir: Path, name: str) -> Path:
    """Where this process writes: the run directory, or <run dir>/.worker<i> for the other workers
    of a multi-worker run (their role read from TF_CONFIG as TensorFlow reads it, before TensorFlow
    starts) or the other processes of a data-parallel run (KERAS_DISTRIBUTION_PROCESS_ID)."""
    if name == "data-parallel":
        if not (index := os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "0")).isdigit():
            raise ConfigError(f"KERAS_DISTRIBUTION_PROCESS_ID={index!r} must be a process number.")
        return run_dir / f".worker{index}" if int(index) else run_dir
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

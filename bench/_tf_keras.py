"""TensorFlow/Keras side of `bench/infer_speed.py`: MobileNetV2 inference as the original
two-stage pipeline builds it (keras.applications.MobileNetV2, global average pooling, a dense
head), compiled with tf.function, timed with the same protocol as the PyTorch variants.

Runs in a separate virtual environment that has `tensorflow-cpu` (kept out of marinelife's own
dependencies); `infer_speed.py --tf-python PATH` calls it and prints its row beside the others.

    /path/to/tf-venv/bin/python bench/_tf_keras.py SIZE SECONDS CLASSES
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from _timing import measure  # noqa: E402


def main() -> None:
    size, seconds, classes = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    base = tf.keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg"
    )
    base.trainable = False
    model = tf.keras.Sequential([base, tf.keras.layers.Dense(classes, activation="softmax")])
    infer = tf.function(lambda x: model(x, training=False))

    def run(batch):
        return infer(tf.constant(batch)).numpy()

    result = measure(run, seconds, (size, size, 3))
    result["version"] = tf.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""TensorFlow/Keras side of `bench/train_speed.py`: the original two-stage pipeline, timed.

Rebuilds `marine_life_2stg.py` with Keras 3 (which no longer has ImageDataGenerator, so the same
augmentations run as Keras preprocessing layers in a parallel tf.data map): MobileNetV2 at 224 px
(random weights: ImageNet weights need the internet and do not change the speed), the head
1024→512→256 (BatchNorm, LeakyReLU, dropout 0.5/0.4/0.3), batch 16, Adam 2e-4 with label
smoothing 0.1; stage 2 unfreezes the layers from index 100 at 2e-5. It times one frozen epoch and
one stage-2 epoch (training + validation, after warm-up batches that pay for tracing) and prints
one JSON line.

Runs in its own virtual environment with `tensorflow-cpu` (not a marinelife dependency):

    /path/to/tf-venv/bin/python bench/_tf_two_stage.py DATA_DIR [WARMUP_STEPS]
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

SIZE, BATCH, UNFREEZE_FROM = 224, 16, 100


def datasets(root: str):
    def load(split: str, shuffle: bool):
        return keras.utils.image_dataset_from_directory(
            os.path.join(root, split), image_size=(SIZE, SIZE), batch_size=BATCH,
            label_mode="categorical", shuffle=shuffle, seed=42, verbose=False,
        )  # fmt: skip

    train, val = load("train", True), load("val", False)
    augment = keras.Sequential([
        keras.layers.RandomRotation(25 / 360, fill_mode="nearest"),
        keras.layers.RandomTranslation(0.25, 0.25, fill_mode="nearest"),
        keras.layers.RandomShear(0.15, 0.15, fill_mode="nearest"),
        keras.layers.RandomZoom(0.25, fill_mode="nearest"),
        keras.layers.RandomFlip("horizontal_and_vertical"),
        keras.layers.RandomBrightness((-0.3, 0.3), value_range=(0, 255)),
    ])  # fmt: skip

    def train_map(x, y):
        x = augment(x, training=True)
        shift = tf.random.uniform([tf.shape(x)[0], 1, 1, 3], -25.5, 25.5)  # channel shift 0.1
        x = tf.clip_by_value(x + shift, 0.0, 255.0)
        return keras.applications.mobilenet_v2.preprocess_input(x), y

    def val_map(x, y):
        return keras.applications.mobilenet_v2.preprocess_input(x), y

    auto = tf.data.AUTOTUNE
    train = train.map(train_map, num_parallel_calls=auto).prefetch(auto)
    val = val.map(val_map, num_parallel_calls=auto).cache().prefetch(auto)
    return train, val


def build(classes: int):
    base = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, pooling="avg"
    )
    base.trainable = False
    x = base.output
    for units, rate in ((1024, 0.5), (512, 0.4), (256, 0.3)):
        x = keras.layers.Dense(units, kernel_regularizer=keras.regularizers.l2(1e-4))(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.LeakyReLU(0.01)(x)
        x = keras.layers.Dropout(rate)(x)
    out = keras.layers.Dense(classes, activation="softmax")(x)
    return base, keras.Model(base.input, out)


def compile_(model, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
    )


def warm_up(model, train, steps: int) -> None:
    """Traces the training step on a few batches (a whole epoch when ``steps`` is 0)."""
    model.fit(train, epochs=1, steps_per_epoch=steps or None, verbose=0)


def timed_epoch(model, train, val) -> dict[str, float]:
    start = time.perf_counter()
    model.fit(train, epochs=1, verbose=0)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    model.evaluate(val, verbose=0)
    return {"train_s": fit_s, "val_s": time.perf_counter() - start}


def main() -> None:
    root = sys.argv[1]
    # Optional: warm up on this many batches instead of a whole epoch (on large sets the
    # warm-up epochs would double the run for tracing that takes a few batches).
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    train, val = datasets(root)
    n_train = sum(len(files) for _, _, files in os.walk(os.path.join(root, "train")))
    n_val = sum(len(files) for _, _, files in os.walk(os.path.join(root, "val")))
    classes = len(next(os.walk(os.path.join(root, "train")))[1])
    base, model = build(classes)
    compile_(model, 2e-4)
    warm_up(model, train, steps)
    model.evaluate(val, verbose=0)  # fills the val cache, as the first epoch would
    frozen = timed_epoch(model, train, val)
    base.trainable = True
    for layer in base.layers[:UNFREEZE_FROM]:
        layer.trainable = False
    compile_(model, 2e-5)
    warm_up(model, train, steps)
    stage2 = timed_epoch(model, train, val)
    result = {
        "version": f"TensorFlow {tf.__version__} / Keras {keras.__version__}",
        "train_images": n_train, "val_images": n_val,
        "frozen_epoch_s": frozen["train_s"] + frozen["val_s"],
        "frozen_train_s": frozen["train_s"],
        "frozen_train_img_s": n_train / frozen["train_s"],
        "val_img_s": n_val / frozen["val_s"],
        "stage2_epoch_s": stage2["train_s"] + stage2["val_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()

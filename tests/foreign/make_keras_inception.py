"""A Keras InceptionV3 (random weights, real batch-norm statistics) converted to ONNX by tf2onnx,
and Keras' own outputs on given photographs: a classifier from a foreign exporter for
tests/export/test_import.py.

Runs in its own environment (tensorflow-cpu + tf2onnx, see tests/export/test_import.py), not edgekit's:

    python make_keras_inception.py FRAMES.npy OUT_DIR

FRAMES.npy: uint8 BGR crops (N, 299, 299, 3) at model size. Writes OUT_DIR/keras_inception_v3.onnx
(opset 17, dynamic batch, NHWC float input) and OUT_DIR/keras_reference.npz (``probs``: Keras'
softmax outputs on the frames preprocessed Keras' way, ``conv_layers``: the model's Conv2D count).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # the same sums every run
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from tensorflow import keras  # noqa: E402

SEED = 7
CLASSES = 10
SIZE = 299


def main(frames_path: str, out_dir: str) -> None:
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = np.load(frames_path)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (SIZE, SIZE, 3), frames.shape
    # Keras' own preprocessing: RGB pixels 0..255, then x / 127.5 - 1
    x = keras.applications.inception_v3.preprocess_input(frames[..., ::-1].astype(np.float32))

    keras.utils.set_random_seed(SEED)
    model = keras.applications.InceptionV3(weights=None, classes=CLASSES)
    # Real batch-norm statistics, weights untouched: momentum 0 makes the moving statistics the
    # last batch's, and a learning rate of 0 leaves every weight as it was.
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy")
    model.fit(x, np.zeros(len(x), np.int64), batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    after = [w.numpy() for w in model.trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after)), "a weight changed during the BN pass"
    assert not np.allclose(bns[0].moving_variance.numpy(), 1.0), "batch-norm statistics were not set"
    # Random features share a large common part (ReLU outputs, averaged), so one class would win
    # every photograph: the classifier's bias centres the logits over the photographs instead, and a
    # larger kernel spreads them (top-1 margins well above float noise).
    head = model.get_layer("predictions")
    features = keras.Model(model.input, head.input).predict(x, batch_size=len(x), verbose=0)
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 4.0, bias - 4.0 * features.mean(0) @ kernel])

    probs = model.predict(x, batch_size=len(x), verbose=0)
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="input_1"),)

    @tf.function(input_signature=spec)
    def forward(inp: tf.Tensor) -> tf.Tensor:
        return model(inp, training=False)

    t1 = time.perf_counter()
    tf2onnx.convert.from_function(forward, input_signature=spec, opset=17,
                                  output_path=str(out / "keras_inception_v3.onnx"))
    convs = sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    np.savez(out / "keras_reference.npz", probs=probs, conv_layers=convs)
    print(f"keras {keras.__version__}, tf2onnx {tf2onnx.__version__}: {convs} Conv2D; "
          f"conversion {time.perf_counter() - t1:.1f} s, all {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.preprocess import Preprocess, _resize_numpy, crop_box, fit_frame, graph_constants, to_model_input


def test_crop_box_is_centre_crop_of_short_side():
    pre = Preprocess(224, 224, crop_fraction=0.875)
    y0, y1, x0, x1 = crop_box(480, 640, pre)
    assert (y1 - y0, x1 - x0) == (420, 420)  # 480 * 0.875
    assert y0 == 30 and x0 == 110


def test_fit_frame_shape_and_dtype():
    pre = Preprocess(299, 299, crop_fraction=0.875, interpolation="bicubic")
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = fit_frame(frame, pre)
    assert out.shape == (299, 299, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_fit_frame_rejects_bad_frames():
    pre = Preprocess(224, 224)
    with pytest.raises(UsageError, match="shape"):
        fit_frame(np.zeros((10, 10), np.uint8), pre)
    with pytest.raises(UsageError, match="uint8"):
        fit_frame(np.zeros((10, 10, 3), np.float32), pre)


def test_numpy_resize_close_to_opencv():
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    a = _resize_numpy(img, 100, 90).astype(int)
    b = cv2.resize(img, (100, 90), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(a - b).max() <= 1


def test_graph_constants_and_reference_path():
    pre = Preprocess(2, 2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    scale, offset = graph_constants(pre)
    np.testing.assert_allclose(scale, 2 / 255, rtol=1e-6)
    np.testing.assert_allclose(offset, -1.0)
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    x = to_model_input(img, pre)
    assert x.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(x[0, 2], 1.0, rtol=1e-6)  # RGB order: blue is the last channel
    np.testing.assert_allclose(x[0, 0], -1.0)


def test_caffe_style_bgr_raw_range():
    pre = Preprocess(1, 1, mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0), color_order="BGR", input_range=255.0)
    img = np.array([[[10, 20, 30]]], np.uint8)[None]
    np.testing.assert_allclose(to_model_input(img, pre)[0, :, 0, 0], [10 - 104, 20 - 117, 30 - 128], atol=1e-4)


@pytest.mark.parametrize("kw", [{"crop_fraction": 0}, {"interpolation": "lanczos9"}, {"color_order": "RGBA"},
                                {"std": (1.0, 0.0, 1.0)}])
def test_invalid_preprocess_refused(kw):
    with pytest.raises(UsageError):
        Preprocess(224, 224, **kw)

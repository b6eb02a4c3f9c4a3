from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.preprocess import Preprocess
from edgekit.quant import calibdata

cv2 = pytest.importorskip("cv2")
PRE = Preprocess(32, 32)


def _img(seed):
    return np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, ext in enumerate(["jpg", "png", "bmp", "webp"]):
        cv2.imwrite(str(tmp_path / "a" / f"img{i}.{ext}"), _img(i))
    cv2.imwrite(str(tmp_path / "a" / "b" / "deep.png"), _img(9))
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    return tmp_path / "a"


def test_discover_is_recursive_and_typed(folder):
    items = calibdata.discover(folder)
    names = sorted(i.path.name for i in items)
    assert names == ["broken.jpg", "deep.png", "img0.jpg", "img1.png", "img2.bmp", "img3.webp"]


def test_corrupt_files_are_skipped_counted_and_named(folder):
    col = calibdata.collect(calibdata.discover(folder), PRE)
    assert len(col.items) == 5 and col.images.shape == (5, 32, 32, 3)
    warn = calibdata.skipped_warning(col.skipped)
    assert warn is not None and "skipped 1 unreadable" in warn and "broken.jpg" in warn


def test_video_frames_are_sampled_evenly(tmp_path):
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 40))
    for i in range(120):
        frame = np.full((40, 48, 3), i * 2, np.uint8)
        w.write(frame)
    w.release()
    items = calibdata.discover(path)
    assert len(items) == calibdata.FRAMES_PER_VIDEO
    idx = [i.index for i in items]
    assert idx[0] == 0 and idx[-1] == 119 and np.all(np.diff(idx) > 0)
    col = calibdata.collect(items[:3], PRE)
    assert col.images.shape == (3, 32, 32, 3)
    assert col.images[2].mean() > col.images[0].mean()  # later frames are brighter


def test_npy_preprocessed_arrays(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", arr)
    col = calibdata.collect(calibdata.discover(tmp_path / "x.npy"), PRE)
    np.testing.assert_array_equal(col.images, arr)
    np.save(tmp_path / "bad.npy", np.zeros((2, 10, 10, 3), np.float32))
    with pytest.raises(UsageError, match="must be uint8"):
        calibdata.load_item(calibdata.discover(tmp_path / "bad.npy")[0], PRE)


def test_split_is_deterministic_disjoint_and_keeps_crops_together(folder):
    items = calibdata.discover(folder, variants=4)
    a1, b1 = calibdata.split(items, 0.3)
    a2, b2 = calibdata.split(items, 0.3)
    assert a1 == a2 and b1 == b2 and len(a1) + len(b1) == len(items)
    assert not {i.path for i in a1} & {i.path for i in b1}


def test_split_does_not_depend_on_location(folder, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(folder, moved)
    a = calibdata.split(calibdata.discover(folder, variants=2), 0.3, folder)
    b = calibdata.split(calibdata.discover(moved, variants=2), 0.3, moved)
    names = [[sorted(i.path.relative_to(r).as_posix() for i in part) for part in pair] for pair, r in
             ((a, folder), (b, moved))]
    assert names[0] == names[1]
    assert a[1]  # something is held out even from a small set


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        calibdata.discover(tmp_path / "nope")
    with pytest.raises(UsageError, match="no images found"):
        calibdata.discover(tmp_path)


def test_default_set_is_real_photographs():
    items = calibdata.discover(calibdata.default_set(), variants=8)
    assert len(items) >= 80
    col = calibdata.collect(items[:8], PRE)
    assert col.images.std() > 20  # real content, not blank


def _class_tree(root, per_class=(30, 30, 30)):
    import cv2

    for c, n in enumerate(per_class):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(d / f"{i:03d}.png"), np.full((8, 8, 3), i, np.uint8))
    return root


def test_first_n_cover_every_class_evenly_not_the_first_folder(tmp_path):
    root = _class_tree(tmp_path / "data")
    items = calibdata.discover(root)
    first = calibdata.spread(items, root)[:30]
    per = {c: sum(calibdata.class_of(it, root) == c for it in first) for c in ("class0", "class1", "class2")}
    assert per == {"class0": 10, "class1": 10, "class2": 10}
    # sorted order would have taken class0 only; within a class the pick is not the first files either
    assert [it.path.name for it in first if calibdata.class_of(it, root) == "class0"] != \
        [f"{i:03d}.png" for i in range(10)]


def test_spread_is_seeded_and_independent_of_listing_and_location(tmp_path):
    import shutil

    root = _class_tree(tmp_path / "a")
    items = calibdata.discover(root)
    a = calibdata.spread(items, root)
    b = calibdata.spread(list(reversed(items)), root)
    assert a == b
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(root, moved)
    c = calibdata.spread(calibdata.discover(moved), moved)
    assert [it.path.relative_to(moved) for it in c] == [it.path.relative_to(root) for it in a]
    assert calibdata.spread(items, root, seed=1) != a


def test_flat_folder_is_shuffled_not_taken_in_name_order(tmp_path):
    import cv2

    for i in range(50):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((8, 8, 3), i, np.uint8))
    items = calibdata.discover(tmp_path)
    first = calibdata.spread(items, tmp_path)[:10]
    idx = sorted(int(it.path.stem) for it in first)
    assert idx != list(range(10)) and max(idx) > 25  # drawn from the whole folder


def test_holdout_takes_the_same_share_of_every_class(tmp_path):
    root = _class_tree(tmp_path / "d", per_class=(40, 20, 10))
    calib, val = calibdata.split(calibdata.discover(root), 0.2, root)
    per = {c: sum(calibdata.class_of(it, root) == c for it in val) for c in ("class0", "class1", "class2")}
    assert per == {"class0": 8, "class1": 4, "class2": 2}
    assert not {it.key for it in calib} & {it.key for it in val}

"""Data sources, bundles, deterministic pipelines and preprocessing (aca_keras.data)."""

from __future__ import annotations

import time
import urllib.request
import warnings

import numpy as np
import pytest
import tensorflow as tf

from aca_keras import data
from aca_keras.data import catalog
from aca_keras.data import tfds as tfds_source
from aca_keras.errors import DataError, DatasetDownloadError, UnknownDatasetError

RNG = np.random.default_rng(0)
N = 40
# 8x8 RGB images with all pixels >= 1 (so zeroed pixels are recognisable), and labels equal
# to the image index (num_classes=N), so every batch says which images it holds.
X_ID = RNG.integers(1, 256, size=(N, 8, 8, 3), dtype=np.uint8)
Y_ID = np.arange(N)


@pytest.fixture(scope="module")
def id_bundle() -> data.DataBundle:
    return data.load((X_ID, Y_ID), num_classes=N, flip=True, name="ids",
                     test=(X_ID[:7], Y_ID[:7]))


def _batches(dataset) -> list:
    return [tf.nest.map_structure(lambda t: t.numpy(), item) for item in dataset]


def _same(a, b) -> bool:
    flat_a, flat_b = tf.nest.flatten(a), tf.nest.flatten(b)
    return len(flat_a) == len(flat_b) and all(
        x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(flat_a, flat_b))


@pytest.fixture
def reachable(monkeypatch):
    """Pretend the download hosts answer (mock_data makes the download a no-op)."""
    monkeypatch.setattr(tfds_source, "download_reachable", lambda url, timeout=None: True)


# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------


def test_digits_is_real_offline_data_with_a_fixed_test_split():
    bundle = data.load("digits")
    again = data.load("digits")
    assert bundle.name == "digits" and bundle.input_shape == (8, 8, 1)
    assert bundle.num_train + bundle.num_test == 1797 and bundle.num_test == 359
    assert bundle.x_train.dtype == np.uint8 and bundle.x_train.max() == 255
    assert bundle.y_train.dtype == np.int32 and set(bundle.y_train) == set(range(10))
    assert bundle.class_names == tuple("0123456789") and not bundle.flip
    assert np.array_equal(bundle.x_test, again.x_test) and np.array_equal(bundle.y_train,
                                                                          again.y_train)
    # the digit 0 images look like a ring: dark centre column, bright around it
    zero = bundle.x_train[bundle.y_train == 0].astype(float).mean(axis=0)[..., 0]
    assert zero[3:5, 3:5].mean() < zero[1:7, 2].mean()
    scaled = bundle.x_train / 255.0
    np.testing.assert_allclose(bundle.mean, [scaled.mean()], rtol=1e-9)
    np.testing.assert_allclose(bundle.std, [scaled.std()], rtol=1e-9)


def test_arrays_grayscale_labels_and_statistics():
    x = RNG.integers(0, 256, size=(30, 10, 12), dtype=np.uint8)
    y = RNG.integers(0, 3, size=(30, 1))
    x_test = RNG.integers(0, 256, size=(5, 10, 12), dtype=np.uint8)
    bundle = data.load((x, y), test=(x_test, np.array([0, 1, 2, 0, 1])), name="grey")
    assert bundle.x_train.shape == (30, 10, 12, 1) and bundle.input_shape == (10, 12, 1)
    assert bundle.y_train.shape == (30,) and bundle.y_train.dtype == np.int32
    assert bundle.num_classes == 3 and bundle.class_names == ("0", "1", "2")
    assert bundle.num_test == 5 and bundle.name == "grey" and not bundle.flip
    np.testing.assert_allclose(bundle.mean, [(x / 255.0).mean()], rtol=1e-9)
    np.testing.assert_allclose(bundle.std, [(x / 255.0).std()], rtol=1e-9)
    # the bundle is immutable: read-only arrays, frozen fields
    with pytest.raises(ValueError):
        bundle.x_train[0, 0, 0, 0] = 1
    with pytest.raises(AttributeError):
        bundle.name = "other"
    assert "num_train=30" in repr(bundle) and len(repr(bundle)) < 200
    assert data.load(bundle) is bundle
    # class names fix the number of classes
    with pytest.warns(UserWarning, match=r"leave 1 of 4 classes .*: 3 \('d'\)"):
        named = data.load((x, y[:, 0]), class_names=["a", "b", "c", "d"])
    assert named.num_classes == 4 and named.class_names == ("a", "b", "c", "d")


def test_float_pixels_on_either_scale():
    x = RNG.uniform(0, 255, size=(6, 8, 8, 3)).astype(np.float64)
    bundle = data.load((x, np.arange(6) % 2))
    assert bundle.x_train.dtype == np.float32
    np.testing.assert_allclose(bundle.x_train, x, rtol=1e-6)
    with pytest.warns(UserWarning, match="0-1 scale"):
        unit = data.load((x / 255.0, np.arange(6) % 2))
    np.testing.assert_allclose(unit.x_train, x, rtol=1e-5)
    np.testing.assert_allclose(unit.mean, bundle.mean, rtol=1e-5)


def test_npz_cifar_sample_and_known_statistics(cifar_sample_path):
    bundle = data.load(cifar_sample_path, flip=True, class_names=data.CIFAR10_CLASS_NAMES)
    assert bundle.x_train.shape == (4660, 32, 32, 3) and bundle.x_train.dtype == np.uint8
    assert bundle.num_classes == 10 and bundle.x_test is None and bundle.flip
    assert bundle.class_names[0] == "airplane"
    # computed statistics are numpy's ...
    channels = bundle.x_train.reshape(-1, 3)
    for c in range(3):
        values = channels[:, c] / 255.0
        assert bundle.mean[c] == pytest.approx(values.mean(), abs=1e-9)
        assert bundle.std[c] == pytest.approx(values.std(), abs=1e-9)
    # ... and the published CIFAR-10 statistics agree with this real sample
    np.testing.assert_allclose(bundle.mean, catalog.CIFAR10.mean, atol=0.02)
    np.testing.assert_allclose(bundle.std, catalog.CIFAR10.std, atol=0.02)


def test_npz_with_test_arrays_and_missing_keys(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, x=X_ID[:20], y=Y_ID[:20] % 4, x_test=X_ID[20:25], y_test=Y_ID[20:25] % 4)
    bundle = data.load(path)
    assert bundle.name == "set" and bundle.num_train == 20 and bundle.num_test == 5
    assert np.array_equal(bundle.x_test, X_ID[20:25]) and bundle.num_classes == 4
    np.savez(tmp_path / "bad.npz", images=X_ID, labels=Y_ID)
    with pytest.raises(DataError, match=r"lacks the key\(s\) \['x', 'y'\].*'images'"):
        data.load(str(tmp_path / "bad.npz"))


def test_tf_dataset_sources():
    x, y = X_ID[:10], Y_ID[:10] % 3
    pairs = tf.data.Dataset.from_tensor_slices((x, y))
    for source in (pairs, pairs.batch(4), tf.data.Dataset.from_tensor_slices(
            {"image": x, "label": y})):
        bundle = data.load(source)
        assert bundle.name == "dataset" and np.array_equal(bundle.x_train, x)
        assert np.array_equal(bundle.y_train, y) and bundle.num_classes == 3
    with pytest.raises(DataError, match=r"\(image, label\) pairs"):
        data.load(tf.data.Dataset.from_tensor_slices(x))
    with pytest.raises(DataError, match="infinite"):
        data.load(pairs.repeat())
    with pytest.raises(DataError, match="empty"):
        data.load(pairs.take(0))


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_sources(tmp_path):
    root = tmp_path / "pets"
    written = {}
    for part, count in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            for i in range(count):
                image = RNG.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
                _write_png(root / part / cls / f"{i}.png", image)
                written[(part, cls, i)] = image
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    bundle = data.load(root)
    assert bundle.name == "pets" and bundle.class_names == ("cat", "dog")
    assert bundle.x_train.shape == (6, 8, 10, 3) and bundle.num_test == 2
    assert np.array_equal(bundle.x_train[0], written[("train", "cat", 0)])  # lossless PNG
    assert list(bundle.y_train) == [0, 0, 0, 1, 1, 1] and list(bundle.y_test) == [0, 1]
    plain = data.load(root / "train", test=root / "test")
    assert np.array_equal(plain.x_train, bundle.x_train) and plain.num_test == 2

    grey = tmp_path / "grey"
    _write_png(grey / "a" / "1.png", RNG.integers(0, 256, size=(8, 8), dtype=np.uint8))
    _write_png(grey / "b" / "1.png", RNG.integers(0, 256, size=(12, 12), dtype=np.uint8))
    with pytest.raises(DataError, match=r"1\.png.*same size.*image_size="):
        data.load(grey)
    resized = data.load(grey, image_size=(8, 8))
    assert resized.x_train.shape == (2, 8, 8, 1) and resized.class_names == ("a", "b")


def test_tfds_sources_through_mock_data(reachable):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12), warnings.catch_warnings():
        # 12 random mock labels leave some of the 10 classes empty (a warning: the class
        # list comes from the set's metadata)
        warnings.filterwarnings("ignore", "The training labels leave", UserWarning)
        cifar = data.load("cifar10")
        mnist = data.load("mnist", test_split=None)
        generic = data.load("tfds:fashion_mnist")
    assert cifar.x_train.shape == (12, 32, 32, 3) and cifar.x_train.dtype == np.uint8
    assert cifar.num_test == 12 and cifar.y_train.dtype == np.int32
    assert cifar.num_classes == 10 and cifar.class_names == data.CIFAR10_CLASS_NAMES
    assert cifar.mean == catalog.CIFAR10.mean and cifar.std == catalog.CIFAR10.std and cifar.flip
    assert mnist.x_train.shape == (12, 28, 28, 1) and mnist.input_shape == (28, 28, 1)
    assert mnist.x_test is None and mnist.class_names == tuple("0123456789")
    assert mnist.mean == (0.1307,) and not mnist.flip
    assert generic.name == "fashion_mnist" and generic.class_names[0] == "T-shirt/top"
    np.testing.assert_allclose(generic.mean, [(generic.x_train / 255.0).mean()], rtol=1e-9)


# ---------------------------------------------------------------------------------------
# Offline behaviour of named TFDS sets
# ---------------------------------------------------------------------------------------


def test_download_false_fails_at_once(tmp_path):
    start = time.monotonic()
    with pytest.raises(DatasetDownloadError) as info:
        data.load("mnist", data_dir=tmp_path, download=False)
    assert time.monotonic() - start < 10
    message = str(info.value)
    for phrase in ("'mnist'", "download=False", "data_dir=", ".npz", "load('digits')"):
        assert phrase in message
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, DataError)


def test_offline_download_fails_fast(tmp_path):
    if tfds_source.download_reachable(catalog.CIFAR10.probe_url):
        pytest.skip("the CIFAR-10 host is reachable here; the offline path cannot be tested")
    start = time.monotonic()
    with pytest.raises(DatasetDownloadError, match=r"'cifar10'.*cannot be reached.*digits"):
        data.load("cifar10", data_dir=tmp_path)
    assert time.monotonic() - start < 30


def test_probe_never_hangs(monkeypatch):
    def stuck(*args, **kwargs):
        time.sleep(10)

    monkeypatch.setattr(urllib.request, "urlopen", stuck)
    start = time.monotonic()
    assert tfds_source.download_reachable("https://example.invalid/", timeout=0.3) is False
    assert time.monotonic() - start < 3


# ---------------------------------------------------------------------------------------
# Bad input: typed, fast, clear
# ---------------------------------------------------------------------------------------

GOOD_X = X_ID[:4]


@pytest.mark.parametrize("source, kwargs, phrase", [
    ((GOOD_X, [0, 1, -1, 2]), {}, "negative label"),
    ((GOOD_X, [0, 1, 5, 2]), {"num_classes": 3}, "below num_classes=3"),
    ((GOOD_X, [0.0, 1.5, 2.0, 1.0]), {}, "non-integer"),
    ((GOOD_X, np.array(["a", "b", "a", "b"])), {}, "integer class indices"),
    ((GOOD_X, np.eye(4)), {}, "one-hot"),
    ((np.zeros((4, 5)), [0, 1, 0, 1]), {}, r"\(N, H, W\)"),
    ((np.zeros((4, 8, 8, 3, 2)), [0, 1, 0, 1]), {}, "5-D"),
    ((np.zeros((4, 8, 8, 5)), [0, 1, 0, 1]), {}, "5 channels"),
    ((np.zeros((4, 3, 8, 8)), [0, 1, 0, 1]), {}, "channels-first"),
    ((np.zeros((0, 8, 8, 3)), []), {}, "empty"),
    ((GOOD_X, [0, 1, 0]), {}, "same length"),
    ((GOOD_X * 2.0 - 200.0, [0, 1, 0, 1]), {}, "un-normalised"),
    ((GOOD_X.astype(np.int32) * 4, [0, 1, 0, 1]), {}, "0..255"),
    (("missing/file.npz"), {}, "No such file"),
    ((GOOD_X, [0, 1, 0, 1], GOOD_X), {}, "pair"),
    ((object()), {}, "Unsupported data source"),
    ((GOOD_X, [0, 1, 0, 1]), {"num_classes": "3"}, "positive integer"),
    ((GOOD_X, [0, 1, 0, 1]), {"num_classes": 3, "class_names": "ab"}, "2 class_names"),
])
def test_bad_input_gives_a_clear_data_error(source, kwargs, phrase):
    with pytest.raises(DataError, match=phrase):
        data.load(source, **kwargs)


def test_labels_with_empty_classes_are_refused_when_num_classes_is_inferred():
    # labels 0, 1, 2, 4, 7: the largest label implies 8 classes, 3 of which have no image
    y = np.array([0, 1, 2, 4, 7, 0, 1, 2])
    with pytest.raises(DataError) as info:
        data.load((X_ID[:8], y))
    message = str(info.value)
    assert "leave 3 of 8 classes without a single image: 3, 5, 6." in message
    assert "The labels found are 5 classes: 0, 1, 2, 4, 7;" in message
    assert "largest label + 1 = 8, for 8 training images" in message
    assert "Relabel the classes to 0..4" in message and "num_classes=" in message
    # the fix the message names works: relabelled, 5 classes in their order
    fixed = data.load((X_ID[:8], np.unique(y, return_inverse=True)[1]))
    assert fixed.num_classes == 5 and list(fixed.y_train) == [0, 1, 2, 3, 4, 0, 1, 2]
    # a class seen only in the test labels has no training image either
    with pytest.raises(DataError, match=r"leave 1 of 3 classes .*: 2\. "):
        data.load((X_ID[:4], [0, 1, 0, 1]), test=(X_ID[4:6], [2, 0]))
    # a huge label for a handful of images: the list is cut after 8 classes
    with pytest.raises(DataError, match=r"leave 999 of 1001 classes without a single image: "
                       r"1, 2, 3, 4, 5, 6, 7, 8, \.\.\. \(999 in all\)"):
        data.load((X_ID[:4], [0, 1000, 0, 1000]))


def test_labels_with_empty_classes_warn_when_num_classes_is_given():
    y = np.array([0, 2, 0, 2])
    with pytest.warns(UserWarning, match=r"leave 2 of 4 classes without a single image: 1, 3\. "
                      r"The labels found are 2 classes: 0, 2; with num_classes=4") as record:
        bundle = data.load((X_ID[:4], y), num_classes=4)
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    assert bundle.num_classes == 4 and list(bundle.y_train) == [0, 2, 0, 2]
    with pytest.warns(UserWarning, match=r"1 \('cat'\), 3 \('fish'\)"):
        named = data.load((X_ID[:4], y), class_names=["ant", "cat", "dog", "fish"])
    assert named.class_names == ("ant", "cat", "dog", "fish")
    # every class present: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.load((X_ID[:4], [0, 1, 2, 1]), num_classes=3).num_classes == 3
        assert data.load((X_ID[:4], [0, 1, 2, 1])).num_classes == 3


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownDatasetError) as info:
        data.load("cifar-11")
    message = str(info.value)
    assert message.startswith("Unknown data set 'cifar-11'")
    assert all(name in message for name in ("cifar10", "mnist", "svhn_cropped", "digits"))
    assert isinstance(info.value, KeyError) and isinstance(info.value, DataError)
    with pytest.raises(UnknownDatasetError, match="does not know"):
        data.load("tfds:no_such_dataset_xyz")


# ---------------------------------------------------------------------------------------
# Splits and pipelines
# ---------------------------------------------------------------------------------------


def test_split_sizes_disjoint_and_seeded(id_bundle):
    (xw, yw), (xa, ya) = id_bundle.split(0.75, seed=3)
    assert len(yw) == 30 and len(ya) == 10
    assert set(yw).isdisjoint(ya) and set(yw) | set(ya) == set(range(N))
    assert np.array_equal(xw, X_ID[yw]) and np.array_equal(xa, X_ID[ya])
    assert np.array_equal(id_bundle.split(0.75, seed=3)[0][1], yw)
    assert not np.array_equal(id_bundle.split(0.75, seed=4)[0][1], yw)
    for bad in (0.0, 1.0, 0.01):
        with pytest.raises(DataError, match="fraction"):
            id_bundle.split(bad)


def test_holdout_test_fraction():
    with pytest.warns(UserWarning, match="leave 10 of 40 classes .* held out"):
        bundle = data.load((X_ID, Y_ID), num_classes=N, test_fraction=0.25)
    assert bundle.num_train == 30 and bundle.num_test == 10
    assert set(bundle.y_train).isdisjoint(bundle.y_test)
    assert list(bundle.y_train) == sorted(bundle.y_train)  # original order kept


def test_search_pipelines_draw_each_half_once_per_epoch(id_bundle):
    search = id_bundle.search_pipelines(batch_size=6, seed=1, epochs=3, augment=False)
    assert (search.steps_per_epoch, search.batch_size) == (3, 6)
    assert (search.weight_size, search.alpha_size) == (20, 20)
    weight, alpha = (set(ids) for ids in id_bundle.split_indices(0.5, seed=1))
    batches = _batches(search.dataset)
    assert len(batches) == 9 and search.dataset.cardinality().numpy() == 9
    epoch_orders = []
    for epoch in range(3):
        chunk = batches[3 * epoch:3 * epoch + 3]
        w = np.concatenate([b[0][1] for b in chunk])
        a = np.concatenate([b[1][1] for b in chunk])
        assert set(w) <= weight and set(a) <= alpha
        assert len(set(w)) == len(set(a)) == 18  # no repeats within an epoch
        epoch_orders.append(w)
        for (xw, yw), (xa, ya) in chunk:  # no augmentation: the exact images, as float32
            assert xw.dtype == np.float32 and yw.dtype == np.int32
            assert np.array_equal(xw, X_ID[yw]) and np.array_equal(xa, X_ID[ya])
    assert not np.array_equal(epoch_orders[0], epoch_orders[1])
    with pytest.warns(UserWarning, match="using batch_size=20"):
        small = id_bundle.search_pipelines(batch_size=64)
    assert small.batch_size == 20 and small.steps_per_epoch == 1


def test_pipelines_are_deterministic_and_resume_exactly(id_bundle):
    def search(**kwargs):
        return _batches(id_bundle.search_pipelines(batch_size=8, seed=5, epochs=3,
                                                   **kwargs).dataset)

    full = search()
    assert _same(full, search())
    assert _same(full[2:], search(start_epoch=1))  # 2 steps per epoch
    assert not _same(full, _batches(id_bundle.search_pipelines(batch_size=8, seed=6,
                                                               epochs=3).dataset))
    train, steps = id_bundle.train_pipeline(16, seed=2, epochs=4, cutout=3)
    resumed, _ = id_bundle.train_pipeline(16, seed=2, epochs=4, start_epoch=3, cutout=3)
    assert steps == 2
    assert _same(_batches(train)[3 * steps:], _batches(resumed))


def _is_crop_of(augmented, original, pad):
    h, w = original.shape[:2]
    padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            window = padded[dy:dy + h, dx:dx + w]
            for candidate, mirrored in ((window, False), (window[:, ::-1], True)):
                if np.array_equal(augmented, candidate):
                    return True, mirrored, (dy, dx)
    return False, False, None


def test_augmentation_is_pad_crop_and_flip_on_training_data_only(id_bundle):
    dataset, _ = id_bundle.train_pipeline(20, seed=0, epochs=2)
    plain, _ = id_bundle.train_pipeline(20, seed=0, epochs=2, augment=False)
    flips, shifts = 0, 0
    for (x, y), (xp, yp) in zip(_batches(dataset), _batches(plain)):
        assert np.array_equal(y, yp) and np.array_equal(xp, X_ID[y])  # same order
        for image, label in zip(x, y):
            ok, mirrored, offset = _is_crop_of(image, X_ID[label].astype(np.float32), pad=1)
            assert ok
            flips += mirrored
            shifts += offset != (1, 1)
    assert 0 < flips < 80 and shifts > 40  # images really change, randomly
    no_flip = data.load((X_ID, Y_ID), num_classes=N, flip=False)
    x, y = _batches(no_flip.train_pipeline(40, augment=True)[0])[0]
    assert all(_is_crop_of(i, X_ID[label].astype(np.float32), 1)[1] is False
               for i, label in zip(x, y) if not np.array_equal(i, i[:, ::-1]))
    # the test pipeline: in order, unaugmented, last partial batch kept
    test_batches = _batches(id_bundle.test_pipeline(3))
    assert [len(b[1]) for b in test_batches] == [3, 3, 1]
    assert np.array_equal(np.concatenate([b[0] for b in test_batches]), X_ID[:7])
    assert test_batches[0][0].dtype == np.float32
    assert data.load((X_ID, Y_ID)).test_pipeline(8) is None


def test_cutout_zeroes_one_clipped_square(id_bundle):
    dataset, _ = id_bundle.train_pipeline(40, seed=0, augment=False, cutout=4)
    x, y = _batches(dataset)[0]
    original = X_ID[y].astype(np.float32)
    zero = np.all(x == 0, axis=-1)
    assert np.array_equal(x[~zero], original[~zero])  # only the hole changes
    sizes = zero.sum(axis=(1, 2))
    assert sizes.max() == 16 and sizes.min() >= 4 and (sizes < 16).any()  # clipped at borders
    for hole in zero:
        rows, cols = np.nonzero(hole)
        assert hole[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
    with pytest.raises(DataError, match="cutout"):
        id_bundle.train_pipeline(8, cutout=-1)


def test_pipeline_argument_errors(id_bundle):
    with pytest.raises(DataError, match="start_epoch"):
        id_bundle.train_pipeline(8, epochs=2, start_epoch=3)
    with pytest.raises(DataError, match="batch_size"):
        id_bundle.train_pipeline(0)
    with pytest.raises(DataError, match="seed"):
        id_bundle.search_pipelines(seed=-1)


# ---------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------


def test_preprocessing_layers_normalise_raw_images():
    import keras

    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    layers = data.preprocessing_layers(mean, std)
    assert [type(layer) for layer in layers] == [keras.layers.Rescaling,
                                                 keras.layers.Normalization]
    out = X_ID[:4].astype(np.float32)
    for layer in layers:
        out = layer(out)
    expected = (X_ID[:4] / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(data.load("digits").preprocessing_layers()) == 2
    with pytest.raises(DataError, match="std must be positive"):
        data.preprocessing_layers((0.5,), (0.0,))
    with pytest.raises(DataError, match="same length"):
        data.preprocessing_layers((0.5, 0.5), (0.2,))

"""Named TensorFlow Datasets sets: read with ``data_dir``, download only after a network probe.

A set that is not prepared in ``data_dir`` is downloaded only when ``download=True`` and its
download host answers a quick probe (:func:`download_reachable`, :data:`PROBE_TIMEOUT_S`);
otherwise :class:`~aca_keras.errors.DatasetDownloadError` is raised at once, naming the
offline options, instead of TFDS retrying for minutes.

Sets are read with ``builder.as_dataset`` in batches rather than with ``batch_size=-1``: the
latter batches by ``sys.maxsize`` when split sizes are unknown (as under
``tfds.testing.mock_data``) and aborts the process inside TensorFlow.
"""

from __future__ import annotations

import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from aca_keras.data.catalog import KnownDataset, known_datasets
from aca_keras.data.readers import read_dataset
from aca_keras.errors import DataError, DatasetDownloadError, UnknownDatasetError

__all__ = ["GENERIC_PROBE_URL", "PROBE_TIMEOUT_S", "download_reachable", "read_tfds"]

#: Reachability check of a download host: seconds before giving up.
PROBE_TIMEOUT_S = 5.0
#: Generic host probed for ``tfds:<name>`` sets whose download host is unknown.
GENERIC_PROBE_URL = "https://storage.googleapis.com/"


def download_reachable(url: str, timeout: float | None = None) -> bool:
    """Whether ``url``'s host answers within ``timeout`` seconds (proxies respected).

    Runs in a daemon thread with a hard deadline, so slow name resolution cannot hang the
    caller. Any HTTP answer (even an error status) or TLS handshake problem counts as
    reachable; failures to resolve or connect do not.
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else float(timeout)
    result: list[bool] = []

    def attempt() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout):
                pass
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)
        except urllib.error.URLError as error:
            result.append(isinstance(error.reason, ssl.SSLError))
        except ssl.SSLError:
            result.append(True)
        except Exception:  # noqa: BLE001 - any other failure means "not reachable"
            result.append(False)

    thread = threading.Thread(target=attempt, name="aca_keras-download-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def _download_error(tfds_name: str, data_dir: Any, reason: str) -> DatasetDownloadError:
    where = f"data_dir={str(data_dir)!r}" if data_dir is not None else (
        "the default TFDS data directory (~/tensorflow_datasets or $TFDS_DATA_DIR)")
    return DatasetDownloadError(
        f"Cannot load data set {tfds_name!r}: it is not prepared in {where}, and {reason}. "
        "Options: pass data_dir= pointing to a prepared TFDS copy (prepare one on a machine with "
        f"internet: tfds.builder({tfds_name!r}, data_dir=...).download_and_prepare()); or pass "
        "the images yourself: numpy arrays load((x, y)), a path to an .npz file with keys x and "
        "y, or a folder of images with one sub-folder per class; or use the bundled offline "
        "set load('digits').")


def read_tfds(tfds_name: str, known: KnownDataset | None, *, data_dir: Any, download: bool,
              train_split: str, test_split: str | None):
    """``(x, y, x_test, y_test, class_names)`` of a TFDS set; ``x_test``/``y_test`` are
    ``None`` when ``test_split`` is."""
    # Imported on use: only named TFDS sets need it, and a slow or broken tensorflow_datasets
    # install must not stop arrays, .npz files and folders from loading.
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(tfds_name, data_dir=None if data_dir is None else str(data_dir))
    except Exception as error:  # tfds raises DatasetNotFoundError and friends
        raise UnknownDatasetError(
            f"TensorFlow Datasets does not know {tfds_name!r} ({type(error).__name__}). Known "
            f"names here: {', '.join(known_datasets())}; see "
            "https://www.tensorflow.org/datasets/catalog for TFDS names.") from error

    prepared = builder.is_prepared()
    if not prepared:
        if not download:
            raise _download_error(tfds_name, data_dir, "download=False")
        url = (known.probe_url if known is not None and known.probe_url else GENERIC_PROBE_URL)
        if not download_reachable(url):
            raise _download_error(
                tfds_name, data_dir,
                f"its download host ({urllib.parse.urlsplit(url).netloc}) cannot be reached "
                f"within {PROBE_TIMEOUT_S:g} s (no network?)")
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise _download_error(tfds_name, data_dir,
                                  f"the download failed ({type(error).__name__}: {error})"
                                  ) from error

    splits = [train_split] + ([test_split] if test_split is not None else [])
    # Read in batches rather than with batch_size=-1: the latter batches by sys.maxsize when
    # the split sizes are unknown (mocked data) and aborts the process inside TensorFlow.
    try:
        loaded = builder.as_dataset(split=splits, as_supervised=True, shuffle_files=False)
        arrays = [read_dataset(part) for part in loaded]
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"Could not read the splits {splits} of {tfds_name!r} "
                        f"({type(error).__name__}: {error}). Check train_split=/test_split= and "
                        "the prepared copy in data_dir=.") from error

    names = None
    supervised = builder.info.supervised_keys
    label_key = supervised[1] if isinstance(supervised, (tuple, list)) and len(supervised) == 2 \
        else "label"
    try:
        feature = builder.info.features[label_key]
        names = tuple(str(n) for n in feature.names)
    except Exception:  # noqa: BLE001 - not a ClassLabel: names default to indices
        names = None
    if known is not None and known.class_names is not None and (
            names is None or len(names) == len(known.class_names)):
        names = known.class_names

    x, y = arrays[0]
    x_test, y_test = arrays[1] if len(arrays) > 1 else (None, None)
    return x, y, x_test, y_test, names

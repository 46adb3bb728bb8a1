"""Typed errors raised by aca_keras.

Every error a user can cause derives from :class:`AcaError` and from the matching built-in
type (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` still works.
Messages name the problem and the fix.
"""

from __future__ import annotations


class AcaError(Exception):
    """Base class of all aca_keras errors."""


class DataError(AcaError, ValueError):
    """Bad input data: wrong shapes, labels out of range, empty or mismatched arrays."""


class UnknownDatasetError(DataError, KeyError):
    """A data source name that aca_keras does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetDownloadError(DataError, ConnectionError):
    """A named data set that is not prepared locally and cannot be downloaded."""


class ArchitectureError(AcaError, ValueError):
    """An invalid genotype or architecture document."""


class SchemaVersionError(ArchitectureError):
    """A document written by a newer aca_keras than this one."""


class UnknownNameError(AcaError, KeyError, ValueError):
    """A name that no :class:`~aca_keras.registry.Registry` holds (a scorer, a pooling rule,
    a variant...); the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownOperationError(UnknownNameError, ArchitectureError):
    """An operation name that is not in the operation registry."""


class RunDirError(AcaError, ValueError):
    """A missing, incomplete or corrupt run directory."""


class NumericalError(AcaError, FloatingPointError):
    """A NaN or Inf loss during search or training."""


class ExportError(AcaError, RuntimeError):
    """An export that could not be written or did not verify."""


class ZooError(AcaError, ValueError):
    """A zoo entry that is missing, malformed or fails its checks."""


class StrategyError(AcaError, ValueError):
    """A ``tf.distribute`` strategy or mixed-precision setting this run cannot use."""


class StorageError(AcaError, OSError):
    """A run file (checkpoint, config, history) that could not be written: disk full, no
    permission, read-only file system. The previous version of the file is left intact."""

"""One registry type for everything that is looked up by name: operations, channel scorers,
pooling rules, allocators, search variants and export formats.

Each module keeps one :class:`Registry` and exposes the same four functions over it (timm's
shape): ``register_*`` (a decorator for the callables; the name comes first),
``unregister_*``, ``list_*`` (the names, in registration order) and ``get_*``. An unknown name
raises :class:`~aca_keras.errors.UnknownNameError` (or the registry's subclass of it), whose
message lists the registered names and says how to register one.

| entries | module | functions |
| --- | --- | --- |
| operations | :mod:`aca_keras.layers.ops` | ``@register_op(name, ...)``, ``unregister_op``, ``list_ops``, ``get_op_spec`` (``UnknownOperationError``) |
| channel scorers | :mod:`aca_keras.channels.importance` | ``@register_scorer(name, ...)``, ``unregister_scorer``, ``list_scorers``, ``get_scorer`` |
| pooling rules | :mod:`aca_keras.channels.importance` | ``@register_pooling(name)``, ``unregister_pooling``, ``list_poolings``, ``get_pooling`` |
| allocators | :mod:`aca_keras.channels.allocation` | ``@register_allocator(name)``, ``unregister_allocator``, ``list_allocators``, ``get_allocator`` (``UnknownAllocatorError``) |
| search variants | :mod:`aca_keras.searching.variants` | ``register_variant(variant_or_name, **fields)``, ``unregister_variant``, ``list_variants``, ``get_variant``, ``own_settings`` |
| export formats | :mod:`aca_keras.exporting.formats` | ``register_format(name, **fields)``, ``unregister_format``, ``list_formats``, ``get_format`` (``UnknownFormatError``) |

A search variant is an object (a :class:`~aca_keras.models.variant.SearchVariant`, whose
hooks the supernet's step calls), not a function, so ``register_variant`` registers it
directly instead of decorating; ``VariantSpec`` is the same class under aca_keras 0.1.0's
name. ``register_scorer`` also takes a ready ``Scorer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from aca_keras.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    Args:
        kind: what an entry is, in messages (``"channel scorer"``).
        error: the error type for unknown names (a subclass of ``UnknownNameError``).
        hint: a sentence added to the unknown-name message (how to register one).
    """

    def __init__(self, kind: str, error: type[UnknownNameError] = UnknownNameError,
                 hint: str = "") -> None:
        self.kind = kind
        self.error = error
        self.hint = hint
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Add ``entry`` as ``name``; an existing name needs ``overwrite=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not overwrite:
            raise ValueError(f"The {self.kind} {name!r} is already registered; pass "
                             "overwrite=True to replace it.")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """``@registry.decorator(name)`` registers the decorated object."""

        def decorate(entry: T) -> T:
            return self.register(name, entry, overwrite=overwrite)

        return decorate

    def get(self, name: str) -> T:
        """The entry called ``name``; unknown names raise ``self.error`` listing the known."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            message = (f"Unknown {self.kind} {name!r}. Registered {self.kind}s: "
                       f"{', '.join(self._entries)}.")
            raise self.error(message + (f" {self.hint}" if self.hint else "")) from None

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry (unknown names raise like :meth:`get`)."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

"""``FrozenMap``: a read-only, hashable mapping.

Run requests and build arguments are memo keys (shared containers, built images), so the
mappings inside them must hash; a dict does not, and re-packing it into sorted tuples at every
layer is what this replaces.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)


class FrozenMap(Mapping[K, V], Generic[K, V]):
    """A mapping that cannot change after it is made; equal to any mapping of the same items
    (a plain dict included), and hashable regardless of the order its items came in."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._items: dict[K, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __or__(self, other: Mapping[K, V]) -> FrozenMap[K, V]:
        """These items with ``other``'s over them (per key), as ``dict | dict`` does."""
        return FrozenMap({**self._items, **other})

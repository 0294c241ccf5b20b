"""Process-wide caches shared by every browser session (a lock per key: one session works).

Named "shared caches", not stores, so as not to be confused with the experiment store."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import streamlit as st


class SharedCache:
    """Values computed once per key for all sessions; a lock per key so only one session works."""

    def __init__(self, max_items: int):
        self._items: OrderedDict = OrderedDict()
        self._locks: dict = {}
        self._guard = threading.Lock()
        self._max = max_items

    def get(self, key, make: Callable):
        with self._guard:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._items:
                    return self._items[key]
            value = make()
            with self._guard:
                self._items[key] = value
                while len(self._items) > self._max:
                    self._items.popitem(last=False)
            return value


@st.cache_resource(show_spinner=False)
def shared_cache(kind: str, max_items: int) -> SharedCache:
    # Filled by us, not a cached loader: progress bars drawn while loading must not be replayed.
    return SharedCache(max_items)

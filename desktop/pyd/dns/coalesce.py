"""One host lookup for the queries of a name that arrive while it runs: a client asks A and
AAAA at once, and each answer is taken from one getaddrinfo of every family (answer.py), so
the second would only repeat the first. Nothing is kept once the lookup returns: what the
host's resolver caches is its own business, and a changed hosts file shows at once."""

from __future__ import annotations

import threading

from pyd.dns.answer import Lookup, Outcome, Resolve


class Coalesced:
    """`resolve`, called once per name at a time; concurrent callers share its result."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve
        self._lock = threading.Lock()
        self._running: dict[str, tuple[threading.Event, list[Lookup]]] = {}

    def __call__(self, name: str) -> Lookup:
        key = name.lower()
        with self._lock:
            running = self._running.get(key)
            if running is None:
                self._running[key] = running = (threading.Event(), [])
                mine = True
            else:
                mine = False
        done, result = running
        if not mine:
            done.wait()
            return result[0]
        try:
            result.append(self._resolve(name))
        except BaseException:
            result.append(Lookup(Outcome.FAILED))  # the waiting callers answer SERVFAIL
            raise
        finally:
            with self._lock:
                del self._running[key]
            done.set()
        return result[0]

"""The engine's waiting queue: requests in admission order, by priority, then by arrival.

A request's rank is `SamplingParams.priority` (the API key's priority: 0 interactive, 1 batch). The
scheduler pops the head while the KV pool has room, so a waiting interactive request is admitted
before every waiting batch request, whenever each arrived; within a rank the order is FIFO. A
running request is never preempted for a higher-ranked one: priority orders admission only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .sequence import Sequence


class WaitingQueue:
    """deque-like (append, popleft, remove, len, iteration in admission order) with one FIFO per rank."""

    def __init__(self) -> None:
        self._ranks: dict[int, deque[Sequence]] = {}

    def append(self, seq: Sequence) -> None:
        """Queue `seq` behind every waiting request of its rank or a lower one."""
        rank = seq.params.priority
        if rank not in self._ranks:
            self._ranks = dict(sorted({**self._ranks, rank: deque()}.items()))
        self._ranks[rank].append(seq)

    def popleft(self) -> Sequence:
        """The next request to admit: the oldest of the lowest rank. IndexError when empty."""
        for queue in self._ranks.values():
            if queue:
                return queue.popleft()
        raise IndexError("pop from an empty WaitingQueue")

    def remove(self, seq: Sequence) -> None:
        """Drop a waiting request (its consumer left). ValueError when it is not waiting."""
        queue = self._ranks.get(seq.params.priority)
        if queue is None:
            raise ValueError("not waiting")
        queue.remove(seq)

    def clear(self) -> None:
        self._ranks.clear()

    def __contains__(self, seq: object) -> bool:
        return any(seq in queue for queue in self._ranks.values())

    def __iter__(self) -> Iterator[Sequence]:
        for queue in self._ranks.values():
            yield from queue

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._ranks.values())

    def __bool__(self) -> bool:
        return any(self._ranks.values())

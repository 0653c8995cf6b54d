"""One pass over an s3prl data loader standing in for the identical passes of several runs.

Runs whose generators are in the same state when they build and start their loaders draw the same shuffling
seed (the loader's base seed and the sampler's permutation come from torch's global generator), so their loaders
yield the same batches in the same order: the loader is built and iterated once, on the first run's generators.
A fetch that draws (the sampler drawing its permutation on the first fetch, a dataset cropping at random)
advances those generators for every member; that stands for each member's own fetch only if every member's
state of the drawn generators equals the first run's at that moment, which is checked on every fetch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from downstream_probes.s3prl.rng import RngState, RngStream
from upstream_mrhubert.errors import MrsuperbError


class StreamsDivergedError(MrsuperbError, RuntimeError):
    """A shared fetch drew from a generator whose state differs between the runs sharing the loader."""


def group_by_state(streams: Sequence[RngStream]) -> list[list[RngStream]]:
    """Streams with identical states, grouped (first-seen order); each group can share one loader."""
    groups: list[list[RngStream]] = []
    for stream in streams:
        for group in groups:
            if not group[0].state.differing(stream.state):
                group.append(stream)
                break
        else:
            groups.append([stream])
    return groups


class SharedIteration:
    """Iterate ``make_loader()`` once for every stream in ``streams`` (whose states must be identical).

    Args:
        make_loader: builds the loader (``expert.get_dataloader(split)``); called on the first stream's
            generators, as each run would call it on its own.
        streams: the runs' generators; equal states at construction.
    """

    def __init__(self, make_loader: Callable[[], Any], streams: Sequence[RngStream]) -> None:
        self.streams = list(streams)
        lead = self.streams[0]
        for stream in self.streams[1:]:
            if stream.state.differing(lead.state):
                raise StreamsDivergedError("a shared loader needs every run's generators in the same state")
        self.creation_state: RngState = lead.state
        with lead.active():
            self.loader = make_loader()
            self._iterator = iter(self.loader)
        for stream in self.streams[1:]:
            stream.state = lead.state
        self.fetched = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> SharedIteration:
        return self

    def __next__(self) -> Any:
        lead = self.streams[0]
        before = lead.state
        before.restore()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._advance(before, RngState.capture())
            raise
        self._advance(before, RngState.capture())
        self.fetched += 1
        return batch

    def _advance(self, before: RngState, after: RngState) -> None:
        drawn = before.differing(after)
        for stream in self.streams[1:]:
            clash = stream.state.differing(before) & drawn
            if clash:
                raise StreamsDivergedError(
                    f"a batch fetch drew from {sorted(clash)}, whose states differ between runs sharing the loader "
                    "(their heads draw differently between fetches); run these probes separately"
                )
            stream.state = stream.state.with_generators(after, drawn)
        self.streams[0].state = after

    def drop(self, stream: RngStream) -> None:
        """Stop keeping ``stream`` in step (its run has stopped)."""
        self.streams = [kept for kept in self.streams if kept is not stream]

    def skip(self, count: int) -> None:
        """Fetch and drop ``count`` batches (to stand where a resumed pass stopped)."""
        for _ in range(count):
            next(self)

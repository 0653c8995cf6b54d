"""The random-number streams of one s3prl run, kept apart so that several runs can share one process.

s3prl seeds Python's ``random``, NumPy and torch (CPU and every CUDA device) once, then draws from them as it
goes: data loaders draw their shuffling seed, datasets crop at random, dropout and SpecAugment draw masks, and
every evaluation reseeds all of them. A run that shares its process with other runs reproduces its separate
self only if every one of those draws comes from its own copy of the four generators. ``RngState`` is that copy;
``RngState.active()`` swaps it in around the run's own work and keeps what the work drew.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

GENERATORS = ("torch", "cuda", "numpy", "python")


def seed_everything(seed: int) -> None:
    """Seed the four generators the way s3prl's ``run_downstream.main`` and ``Runner.evaluate`` do."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass(frozen=True)
class RngState:
    """The state of Python's, NumPy's and torch's (CPU, each CUDA device) global generators.

    Immutable: ``capture`` copies the states out, ``restore`` copies them in, so one object can be shared by
    several runs whose streams are (still) identical.
    """

    torch: Tensor
    cuda: tuple[Tensor, ...] | None
    numpy: tuple
    python: tuple

    @classmethod
    def capture(cls) -> RngState:
        # CUDA's generators once CUDA is in use (it is before any head is built when the device is a GPU);
        # asking for them earlier would start CUDA in a CPU run
        cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_initialized() else None
        numpy_state = np.random.get_state(legacy=True)
        assert isinstance(numpy_state, tuple)  # the global generator is an MT19937: a dict only for other kinds
        return cls(torch.get_rng_state(), cuda, numpy_state, random.getstate())

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(list(self.cuda))
        np.random.set_state(self.numpy)
        random.setstate(self.python)

    def differing(self, other: RngState) -> frozenset[str]:
        """The generators whose states differ between ``self`` and ``other``."""
        differ = set()
        if not torch.equal(self.torch, other.torch):
            differ.add("torch")
        if (self.cuda is None) != (other.cuda is None) or (
            self.cuda is not None
            and other.cuda is not None
            and not all(torch.equal(a, b) for a, b in zip(self.cuda, other.cuda, strict=True))
        ):
            differ.add("cuda")
        if (
            self.numpy[0] != other.numpy[0]
            or not np.array_equal(self.numpy[1], other.numpy[1])
            or (self.numpy[2:] != other.numpy[2:])
        ):
            differ.add("numpy")
        if self.python != other.python:
            differ.add("python")
        return frozenset(differ)

    def with_generators(self, source: RngState, generators: frozenset[str]) -> RngState:
        """This state with ``generators`` taken from ``source``."""
        return replace(self, **{name: getattr(source, name) for name in generators})

    def to_dict(self) -> dict:
        """Plain objects for ``torch.save`` (no class of ours in the checkpoint)."""
        return {"torch": self.torch, "cuda": self.cuda, "numpy": self.numpy, "python": self.python}

    @classmethod
    def from_dict(cls, data: dict) -> RngState:
        cuda = data["cuda"]
        return cls(data["torch"], tuple(cuda) if cuda is not None else None, tuple(data["numpy"]), data["python"])


class RngStream:
    """One run's generators: ``with stream.active():`` runs code on them and keeps what it drew."""

    def __init__(self, state: RngState) -> None:
        self.state = state

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.state.restore()
        try:
            yield
        finally:
            self.state = RngState.capture()

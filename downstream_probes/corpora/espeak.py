"""Speech synthesis with exact word and phoneme timings, through espeak-ng's C API (our own ctypes bindings).

The PyPI package ``espeakng-loader`` ships ``libespeak-ng.so`` and its ``espeak-ng-data`` folder
(``get_library_path()``, ``get_data_path()``). We initialise the library in synchronous retrieval mode with phoneme
events on: the synth callback then receives 16-bit audio at 22050 Hz together with WORD and PHONEME events, each
carrying its sample position. Audio is resampled to 16 kHz (``resample_poly(320, 441)``: 22050 * 320 / 441 = 16000)
and every boundary is moved to the 16 kHz sample grid, so timings are integers (samples at 16 kHz). Words that
espeak-ng speaks as one dictionary entry ("that the") are split again by their standalone phoneme counts.

Determinism: espeak-ng keeps state between messages (a pitch-flutter phase, echo buffers, a random generator seeded
from the clock at start-up), so the same text can synthesise differently depending on what was spoken before.
``synthesize_many`` therefore runs every chunk of requests in a FRESH process (forked from a fork server that never
synthesises, or spawned), seeds espeak's generator per request and sets the voice and parameters per request: the
output depends only on the requests and the chunk size, never on what the calling process did before or on the
number of workers.

Public API:
    ``Voice`` (an espeak variant plus pitch, pitch range and rate), ``SynthesisRequest`` (text, voice, seed),
    ``Synthesis`` (int16 audio at 16 kHz, ``words`` and ``phonemes`` as ``TimedWord``/``TimedPhoneme`` in samples),
    ``synthesize_many(requests, workers=1, chunk_size=...)`` (an iterator of ``Synthesis`` in request order),
    ``espeak_version()``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.errors import MrsuperbError, UsageError

ESPEAK_SAMPLE_RATE = 22050
# resample_poly factors for 22050 Hz -> 16000 Hz: 22050 * 320 / 441 = 16000 (160/441 would give 8 kHz).
_UP, _DOWN = 320, 441

# speak_lib.h constants (API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7
_EE_OK = 0

DEFAULT_CHUNK_SIZE = 256


class SynthesisError(MrsuperbError, RuntimeError):
    """espeak-ng failed, or its events do not match the words of the text."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice variant (``en-us+m3``) with base pitch, pitch range (0-100, 50 is
    espeak's default) and speaking rate in words per minute (80-450)."""

    variant: str
    gender: str
    pitch: int = 50
    pitch_range: int = 50
    rate: int = 175
    language: str = "en-us"

    @property
    def espeak_name(self) -> str:
        return f"{self.language}+{self.variant}"

    def with_rate(self, rate: int) -> Voice:
        return dataclasses.replace(self, rate=int(min(max(rate, 80), 450)))

    def to_json(self) -> dict:
        return {"espeak_voice": self.espeak_name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class SynthesisRequest:
    """Speak ``text`` (words separated by single spaces; letters and apostrophes) with ``voice``; ``seed`` seeds
    espeak-ng's own noise generator (breathy and Klatt voices use it)."""

    text: str
    voice: Voice
    seed: int = 0


@dataclass(frozen=True)
class TimedWord:
    """A word of the request text and its span ``[start, end)`` in 16 kHz samples."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class TimedPhoneme:
    """An espeak-ng phoneme mnemonic (stress marks kept) and its span; ``word_index`` is -1 for pauses."""

    mnemonic: str
    start: int
    end: int
    word_index: int


@dataclass(frozen=True)
class Synthesis:
    """Mono int16 audio at 16 kHz and the timings of its words and phonemes (in samples)."""

    text: str
    voice: Voice
    audio: np.ndarray
    words: tuple[TimedWord, ...]
    phonemes: tuple[TimedPhoneme, ...]

    @property
    def num_samples(self) -> int:
        return int(self.audio.shape[0])

    @property
    def duration(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def shifted(self, lead: int, trail: int) -> Synthesis:
        """The same speech with ``lead`` zero samples before and ``trail`` after; timings move with it."""
        audio = np.concatenate([np.zeros(lead, dtype=np.int16), self.audio, np.zeros(trail, dtype=np.int16)])
        return dataclasses.replace(
            self,
            audio=audio,
            words=tuple(dataclasses.replace(w, start=w.start + lead, end=w.end + lead) for w in self.words),
            phonemes=tuple(dataclasses.replace(p, start=p.start + lead, end=p.end + lead) for p in self.phonemes),
        )


# ----------------------------------------------------------------------------------------------------------------
# ctypes bindings


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _load_library() -> ctypes.CDLL:
    import espeakng_loader

    library = ctypes.CDLL(espeakng_loader.get_library_path())
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_Initialize.restype = ctypes.c_int
    library.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    library.espeak_SetSynthCallback.restype = None
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetVoiceByName.restype = ctypes.c_int
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_SetParameter.restype = ctypes.c_int
    library.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    library.espeak_Synth.restype = ctypes.c_int
    library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    library.espeak_ng_SetRandSeed.restype = ctypes.c_int
    library.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    library.espeak_TextToPhonemes.restype = ctypes.c_char_p
    library.espeak_Info.argtypes = [ctypes.c_void_p]
    library.espeak_Info.restype = ctypes.c_char_p
    return library


def espeak_version() -> str:
    """The version string of the bundled libespeak-ng (``espeak_Info``); needs no initialisation."""
    return _load_library().espeak_Info(None).decode()


@dataclass(frozen=True)
class _RawEvent:
    kind: int
    text_position: int
    sample: int
    number: int
    phoneme: str


class _Engine:
    """The initialised library in this process. Only ever created inside a fresh worker process."""

    def __init__(self) -> None:
        import espeakng_loader

        self._library = _load_library()
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        rate = self._library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        )
        if rate != ESPEAK_SAMPLE_RATE:
            raise SynthesisError(
                f"espeak_Initialize returned {rate} (expected {ESPEAK_SAMPLE_RATE} Hz) with data at {data_parent!r}"
            )
        self._chunks: list[np.ndarray] = []
        self._events: list[_RawEvent] = []
        self._phoneme_counts: dict[str, int] = {}
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: the library holds the pointer
        self._library.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            phoneme = event.id.string.decode("utf-8", "replace") if event.type == _EVENT_PHONEME else ""
            number = event.id.number if event.type == _EVENT_WORD else 0
            self._events.append(_RawEvent(event.type, event.text_position, event.sample, number, phoneme))
            index += 1
        return 0

    def _configure(self, request: SynthesisRequest) -> None:
        voice = request.voice
        if self._library.espeak_SetVoiceByName(voice.espeak_name.encode()) != _EE_OK:
            raise SynthesisError(f"espeak-ng has no voice {voice.espeak_name!r}")
        for parameter, value in (
            (_PARAM_RATE, voice.rate),
            (_PARAM_PITCH, voice.pitch),
            (_PARAM_RANGE, voice.pitch_range),
            (_PARAM_VOLUME, 100),
            (_PARAM_WORDGAP, 0),
        ):
            if self._library.espeak_SetParameter(parameter, int(value), 0) != _EE_OK:
                raise SynthesisError(f"espeak_SetParameter({parameter}, {value}) failed for {voice}")
        self._library.espeak_ng_SetRandSeed(int(request.seed) & 0x7FFFFFFF)

    def synthesize(self, request: SynthesisRequest) -> Synthesis:
        self._configure(request)
        self._chunks, self._events = [], []
        text = request.text.lower().encode("utf-8")
        status = self._library.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise SynthesisError(f"espeak_Synth failed with status {status} for {request.text!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return _to_synthesis(request, audio, self._events, self.count_phonemes)

    def count_phonemes(self, word: str) -> int:
        """Phonemes in the standalone pronunciation of ``word`` (``espeak_TextToPhonemes``, current voice)."""
        if word not in self._phoneme_counts:
            pointer = ctypes.c_char_p(word.lower().encode("utf-8"))
            phonemes = self._library.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, ord(" ") << 8)
            self._phoneme_counts[word] = len((phonemes or b"").split())
        return self._phoneme_counts[word]


def _resample(audio_22k: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    resampled = resample_poly(audio_22k.astype(np.float64), _UP, _DOWN)
    return np.clip(np.rint(resampled), -32768, 32767).astype(np.int16)


def _to_16k(sample_22k: int, limit: int) -> int:
    return min(max((sample_22k * _UP + _DOWN // 2) // _DOWN, 0), limit)


def _word_starts(words: Sequence[str]) -> dict[int, int]:
    """1-based character position of each word in ``" ".join(words)`` (espeak's ``text_position``) -> index."""
    starts, position = {}, 1
    for index, word in enumerate(words):
        starts[position] = index
        position += len(word) + 1
    return starts


def _split_counts(total: int, standalone: Sequence[int]) -> list[int]:
    """Share ``total`` phonemes among words whose standalone pronunciations have ``standalone`` phonemes each
    (exactly when the counts agree, else in proportion), giving every word at least one."""
    if sum(standalone) == total and min(standalone) > 0:
        return list(standalone)
    weights = np.maximum(np.asarray(standalone, dtype=np.float64), 1.0)
    bounds = np.rint(np.cumsum(weights) / weights.sum() * total).astype(int)
    counts = np.diff(np.concatenate([[0], bounds])).tolist()
    for index in range(len(counts)):  # at least one phoneme per word, taken from the largest share
        while counts[index] < 1:
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[index] += 1
    return counts


def _to_synthesis(
    request: SynthesisRequest,
    audio_22k: np.ndarray,
    events: list[_RawEvent],
    count_phonemes: Callable[[str], int],
) -> Synthesis:
    """Resample to 16 kHz and turn espeak's events into word and phoneme spans.

    espeak-ng speaks some word pairs as one dictionary entry ("that the", "on the", "of the"): it then reports a
    single WORD event for both. The phonemes of such a group are shared among its words by each word's standalone
    phoneme count (``count_phonemes``), which matches the merged pronunciation in the cases we speak.
    """
    words = request.text.split()
    starts = _word_starts(words)
    word_events = [event for event in events if event.kind == _EVENT_WORD]
    first_words = []
    for event in word_events:
        if event.text_position not in starts:
            raise SynthesisError(
                f"espeak-ng reported a word at character {event.text_position} of {request.text!r}, where no word "
                "starts; use plain words (letters and apostrophes, no digits or abbreviations)"
            )
        first_words.append(starts[event.text_position])
    if not first_words or first_words[0] != 0:
        raise SynthesisError(f"espeak-ng reported no word event for the first word of {request.text!r}")
    group_of_position = {event.text_position: group for group, event in enumerate(word_events)}
    group_words = [
        list(range(first, first_words[g + 1] if g + 1 < len(first_words) else len(words)))
        for g, first in enumerate(first_words)
    ]

    audio = _resample(audio_22k)
    limit = int(audio.shape[0])
    phoneme_events = [event for event in events if event.kind == _EVENT_PHONEME]
    spans = []
    for index, event in enumerate(phoneme_events):
        end_22k = phoneme_events[index + 1].sample if index + 1 < len(phoneme_events) else audio_22k.shape[0]
        spans.append((event, _to_16k(event.sample, limit), _to_16k(end_22k, limit)))

    word_index_of: dict[int, int] = {}
    for group, members in enumerate(group_words):
        own = [
            i
            for i, (event, _, _) in enumerate(spans)
            if not event.phoneme.startswith("_") and group_of_position.get(event.text_position) == group
        ]
        if len(own) < len(members):
            raise SynthesisError(
                f"espeak-ng produced {len(own)} phonemes for the {len(members)} word(s) "
                f"{' '.join(words[m] for m in members)!r} of {request.text!r}"
            )
        if len(members) == 1:
            counts = [len(own)]
        else:
            counts = _split_counts(len(own), [count_phonemes(words[m]) for m in members])
        cursor = 0
        for member, count in zip(members, counts, strict=False):
            for i in own[cursor : cursor + count]:
                word_index_of[i] = member
            cursor += count

    phonemes = tuple(
        TimedPhoneme(event.phoneme, start, end, word_index_of.get(i, -1)) for i, (event, start, end) in enumerate(spans)
    )
    timed_words = []
    for index, word in enumerate(words):
        own_phonemes = [p for p in phonemes if p.word_index == index]
        timed_words.append(TimedWord(word, own_phonemes[0].start, own_phonemes[-1].end))
    return Synthesis(request.text, request.voice, audio, tuple(timed_words), phonemes)


_ENGINE: _Engine | None = None


def _synthesize_chunk(requests: Sequence[SynthesisRequest]) -> list[Synthesis]:
    """Worker-process entry point: synthesise ``requests`` in order with this process's (fresh) engine."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return [_ENGINE.synthesize(request) for request in requests]


def exit_with_process(pid: int, poll_s: float = 0.5) -> None:
    """Worker initializer: end this process as soon as process ``pid`` (the build) is gone.

    The workers are forked by the fork server, not by the build, so nothing else stops them when the build is
    killed with -9: they would wait idle for work forever. A daemon thread polls the build's pid.
    """

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # the pid now belongs to another user's process: ours is gone
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-build", daemon=True).start()


def _fresh_process_context() -> multiprocessing.context.BaseContext:
    """Processes that start without espeak-ng's state: forked from a fork server that never synthesised (fast:
    numpy and scipy are imported once, in the server), or spawned where there is no fork server (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, "scipy.signal"])
    return context


def synthesize_many(
    requests: Sequence[SynthesisRequest], *, workers: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[Synthesis]:
    """Synthesise ``requests``, yielding results in request order.

    Requests are cut into chunks of ``chunk_size``; each chunk runs in a fresh process (so results are
    reproducible, see the module docstring) and up to ``workers`` chunks run at once. Results are identical for any
    ``workers``; they can differ (slightly) for a different ``chunk_size``, so builders keep it fixed.
    """
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    chunks = [list(requests[i : i + chunk_size]) for i in range(0, len(requests), chunk_size)]
    if not chunks:
        return
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_fresh_process_context(),
        max_tasks_per_child=1,
        initializer=exit_with_process,
        initargs=(os.getpid(),),
    ) as pool:
        pending: deque[Future] = deque()
        next_chunk = 0
        while next_chunk < len(chunks) or pending:
            while next_chunk < len(chunks) and len(pending) < workers + 1:
                pending.append(pool.submit(_synthesize_chunk, chunks[next_chunk]))
                next_chunk += 1
            yield from pending.popleft().result()

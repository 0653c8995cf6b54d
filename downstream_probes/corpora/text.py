"""Our own word lists and sentence templates for the synthetic corpora (all text is upper case, letters and
apostrophes only, so that espeak-ng speaks exactly one word per written word).

- ``asr_sentence(rng)``: read-speech sentences (LibriSpeech-like transcripts), 3-8 words.
- ``snips_sentence(rng)``: a ``SlotSentence`` (words, per-word slot tags, intent) from SNIPS-like templates over the
  seven SNIPS intents, with SNIPS's slot names; tags are slot names or ``O`` (Audio SNIPS uses no B-/I- prefixes).
- ``FLUENT_INTENTS``: the 31 Fluent Speech Commands intents (action, object, location) with our own phrasings.
- ``SPEECH_COMMANDS_KEYWORDS`` (the 10 SUPERB keywords) and ``SPEECH_COMMANDS_AUXILIARY`` (the 20 other words of
  Speech Commands v0.01, which s3prl maps to ``_unknown_``).
- ``all_words()``: every word any corpus can speak (tests check espeak-ng and the phone table cover them).
- ``LETTERS``: the characters of those words (the transcripts' character vocabularies add a word separator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from upstream_mrhubert.errors import UsageError

LETTERS: tuple[str, ...] = (*"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "'")  # every character a word of ours is spelled with
_WORD = re.compile(r"[A-Z]+(?:'[A-Z]+)?")

# ----------------------------------------------------------------------------------------------------------------
# read speech (ASR, and the speech inside SE and SD)

_LEXICON: dict[str, tuple[str, ...]] = {
    "DET": ("THE", "A", "THIS", "THAT", "EVERY", "ONE"),
    "ADJ": (
        "OLD",
        "YOUNG",
        "LITTLE",
        "GREAT",
        "QUIET",
        "BRIGHT",
        "DARK",
        "COLD",
        "WARM",
        "HEAVY",
        "GENTLE",
        "STRANGE",
        "GOLDEN",
        "SILENT",
        "EMPTY",
        "NARROW",
        "DISTANT",
        "HAPPY",
        "TIRED",
        "CLEVER",
        "WOODEN",
        "SUDDEN",
    ),
    "NOUN": (
        "MAN",
        "WOMAN",
        "CHILD",
        "HORSE",
        "RIVER",
        "HOUSE",
        "GARDEN",
        "LETTER",
        "WINDOW",
        "KING",
        "SHIP",
        "FOREST",
        "DOOR",
        "MOUNTAIN",
        "VILLAGE",
        "CAPTAIN",
        "STORM",
        "LAMP",
        "BRIDGE",
        "ROAD",
        "TABLE",
        "FIRE",
        "STONE",
        "SOLDIER",
        "DOCTOR",
        "MOTHER",
        "FATHER",
        "SISTER",
        "BROTHER",
        "CHURCH",
        "FIELD",
        "BOOK",
        "CANDLE",
    ),
    "VERB_PAST": (
        "SAW",
        "FOUND",
        "OPENED",
        "CLOSED",
        "CARRIED",
        "WATCHED",
        "FOLLOWED",
        "LEFT",
        "REMEMBERED",
        "BUILT",
        "PAINTED",
        "CROSSED",
        "LOST",
        "KEPT",
        "REACHED",
        "CALLED",
        "SOLD",
        "BROKE",
        "HELD",
        "FORGOT",
    ),
    "VERB_BASE": (
        "SEE",
        "FIND",
        "OPEN",
        "CLOSE",
        "CARRY",
        "WATCH",
        "FOLLOW",
        "LEAVE",
        "REMEMBER",
        "BUILD",
        "PAINT",
        "CROSS",
        "KEEP",
        "REACH",
        "CALL",
        "SELL",
        "HOLD",
    ),
    "VERB_INTR": ("WAITED", "SMILED", "LAUGHED", "SLEPT", "LISTENED", "WANDERED", "TREMBLED", "ANSWERED", "ROSE"),
    "PREP": ("NEAR", "BEHIND", "BESIDE", "UNDER", "ACROSS", "THROUGH", "ABOVE", "INTO", "TOWARD", "AROUND"),
    "ADV": ("SLOWLY", "QUICKLY", "SOFTLY", "AGAIN", "TOGETHER", "ALONE", "SOMETIMES", "TWICE", "CAREFULLY"),
    "NAME": ("JOHN", "MARY", "THOMAS", "ANNA", "PETER", "MARGARET", "HENRY", "ELLEN", "ARTHUR", "LUCY", "EDWARD"),
    "PRON": ("HE", "SHE", "THEY", "WE", "I", "YOU"),
    "TIME": ("TODAY", "TONIGHT", "TOMORROW", "YESTERDAY", "AT DAWN", "IN THE MORNING", "BEFORE NOON", "AT NIGHT"),
    "NEG": ("DIDN'T", "COULDN'T", "WOULDN'T", "WON'T"),
    "POSS": ("HIS", "HER", "THEIR", "OUR", "MY"),
}

_ASR_TEMPLATES: tuple[str, ...] = (
    "DET ADJ NOUN VERB_PAST DET NOUN",
    "NAME VERB_PAST DET ADJ NOUN",
    "PRON VERB_PAST POSS NOUN ADV",
    "DET NOUN VERB_INTR ADV",
    "NAME AND NAME VERB_INTR PREP DET NOUN",
    "PRON NEG VERB_BASE DET NOUN",
    "DET NOUN WAS ADJ",
    "WHERE DID NAME VERB_BASE POSS NOUN",
    "PRON WILL VERB_BASE DET ADJ NOUN TIME",
    "POSS ADJ NOUN VERB_INTR PREP DET NOUN",
    "NAME VERB_PAST DET NOUN PREP DET ADJ NOUN",
    "TIME PRON VERB_PAST DET NOUN",
    "THE NOUN OF THE NOUN WAS ADJ",
    "NAME'S NOUN VERB_INTR ADV",
)


def _expand(template: str, rng: np.random.Generator) -> list[str]:
    words: list[str] = []
    for token in template.split():
        suffix = ""
        if token.endswith("'S") and token[:-2] in _LEXICON:
            token, suffix = token[:-2], "'S"
        if token in _LEXICON:
            choices = _LEXICON[token]
            phrase = choices[int(rng.integers(len(choices)))]
            parts = phrase.split()
            parts[-1] += suffix
            words += parts
        else:
            words.append(token + suffix)
    return words


def asr_sentence(rng: np.random.Generator) -> str:
    """One read-speech sentence of 3-8 words."""
    template = _ASR_TEMPLATES[int(rng.integers(len(_ASR_TEMPLATES)))]
    return " ".join(_expand(template, rng)[:8])


# ----------------------------------------------------------------------------------------------------------------
# SNIPS-like slot filling


@dataclass(frozen=True)
class SlotSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]  # one per word: a slot name or "O"
    intent: str

    @property
    def text(self) -> str:
        return " ".join(self.words)


_SLOT_VALUES: dict[str, tuple[str, ...]] = {
    "artist": ("THE SILVER FOXES", "MARY LANE", "JOHNNY BLUE", "THE NIGHT OWLS", "ELLA STONE", "RED HARBOR"),
    "playlist": ("ROAD TRIP", "MORNING COFFEE", "SUMMER NIGHTS", "WORKOUT", "RAINY DAY", "DINNER PARTY"),
    "playlist_owner": ("MY", "OUR"),
    "music_item": ("SONG", "ALBUM", "TRACK", "TUNE"),
    "party_size_number": ("TWO", "THREE", "FOUR", "FIVE", "SIX", "EIGHT"),
    "restaurant_type": ("RESTAURANT", "DINER", "BAR", "PUB", "BISTRO"),
    "served_dish": ("PIZZA", "NOODLES", "PASTA", "CURRY", "DUMPLINGS"),
    "city": ("BOSTON", "DENVER", "CHICAGO", "SEATTLE", "PARIS", "LONDON", "MADRID", "DUBLIN"),
    "state": ("TEXAS", "OHIO", "OREGON", "NEVADA", "MAINE", "GEORGIA"),
    "timeRange": ("TONIGHT", "TOMORROW", "NEXT WEEK", "THIS EVENING", "AT NOON", "ON FRIDAY"),
    "condition_description": ("RAINY", "SNOWY", "CLOUDY", "WINDY", "FOGGY", "SUNNY"),
    "condition_temperature": ("HOT", "COLD", "CHILLY", "WARM", "FREEZING"),
    "genre": ("JAZZ", "BLUES", "FOLK", "ROCK", "METAL", "POP", "SOUL"),
    "service": ("SPOTIFY", "PANDORA", "YOUTUBE", "DEEZER"),
    "object_type": ("BOOK", "NOVEL", "ESSAY", "SONG", "GAME", "PICTURE", "TELEVISION SHOW"),
    "object_name": ("THE GOLDEN RIVER", "WINTER GARDEN", "A QUIET STORM", "THE LAST CAPTAIN", "DARK WATER"),
    "rating_value": ("ONE", "TWO", "THREE", "FOUR", "FIVE"),
    "best_rating": ("FIVE", "SIX", "TEN"),
    "rating_unit": ("STARS", "POINTS"),
    "movie_name": ("THE LONG ROAD", "SILENT HARBOR", "MIDNIGHT TRAIN", "THE GLASS TOWER", "OPEN SKIES"),
    "movie_type": ("ANIMATED MOVIES", "SCARY MOVIES", "FILMS"),
    "location_name": ("RIVERSIDE CINEMA", "GRAND THEATER", "STAR MOVIE HOUSE"),
    "spatial_relation": ("NEAR", "CLOSE TO", "AROUND"),
}

# (intent, template); {slot} is filled from _SLOT_VALUES and tagged with the slot name.
_SNIPS_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("AddToPlaylist", "ADD {artist} TO {playlist_owner} {playlist} PLAYLIST"),
    ("AddToPlaylist", "PUT THIS {music_item} ON {playlist}"),
    ("AddToPlaylist", "ADD A {music_item} BY {artist} TO {playlist}"),
    ("BookRestaurant", "BOOK A TABLE FOR {party_size_number} AT A {restaurant_type} IN {city}"),
    ("BookRestaurant", "RESERVE A {restaurant_type} THAT SERVES {served_dish} {timeRange}"),
    ("BookRestaurant", "I NEED A TABLE FOR {party_size_number} IN {state} {timeRange}"),
    ("GetWeather", "WHAT WILL THE WEATHER BE IN {city} {timeRange}"),
    ("GetWeather", "WILL IT BE {condition_description} IN {state}"),
    ("GetWeather", "IS IT GOING TO BE {condition_temperature} {timeRange}"),
    ("PlayMusic", "PLAY SOME {genre} MUSIC"),
    ("PlayMusic", "PLAY {artist} ON {service}"),
    ("PlayMusic", "PLAY A {music_item} BY {artist}"),
    ("RateBook", "RATE THIS {object_type} {rating_value} OUT OF {best_rating}"),
    ("RateBook", "GIVE {object_name} {rating_value} {rating_unit}"),
    ("SearchCreativeWork", "FIND THE {object_type} {object_name}"),
    ("SearchCreativeWork", "SHOW ME THE {object_type} CALLED {object_name}"),
    ("SearchScreeningEvent", "FIND MOVIE TIMES FOR {movie_name} {timeRange}"),
    ("SearchScreeningEvent", "WHAT FILMS ARE PLAYING AT THE {location_name}"),
    ("SearchScreeningEvent", "SHOW ME {movie_type} {spatial_relation} {city}"),
)

SNIPS_INTENTS: tuple[str, ...] = tuple(sorted({intent for intent, _ in _SNIPS_TEMPLATES}))
SNIPS_SLOTS: tuple[str, ...] = tuple(sorted(_SLOT_VALUES))


def snips_sentence(rng: np.random.Generator, intent: str | None = None) -> SlotSentence:
    """A SNIPS-style sentence; ``intent`` restricts the template choice."""
    templates = [t for t in _SNIPS_TEMPLATES if intent is None or t[0] == intent]
    chosen_intent, template = templates[int(rng.integers(len(templates)))]
    words: list[str] = []
    tags: list[str] = []
    for token in template.split():
        if token.startswith("{"):
            slot = token.strip("{}")
            values = _SLOT_VALUES[slot]
            value = values[int(rng.integers(len(values)))].split()
            words += value
            tags += [slot] * len(value)
        else:
            words.append(token)
            tags.append("O")
    return SlotSentence(tuple(words), tuple(tags), chosen_intent)


# ----------------------------------------------------------------------------------------------------------------
# Fluent Speech Commands


@dataclass(frozen=True)
class FluentIntent:
    action: str
    object: str
    location: str
    phrasings: tuple[str, ...]  # sentence case, as FSC's transcriptions


FLUENT_INTENTS_FILE = Path(__file__).with_name("fluent_intents.tsv")


def read_fluent_intents(path: Path = FLUENT_INTENTS_FILE) -> tuple[FluentIntent, ...]:
    """The intent table: one intent a line (action, object, location, phrasings separated by `` | ``), tab-separated,
    after ``#`` comments and a header line."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return tuple(
        FluentIntent(action, obj, location, tuple(said.split(" | "))) for action, obj, location, said in rows[1:]
    )


FLUENT_INTENTS = read_fluent_intents()

# ----------------------------------------------------------------------------------------------------------------
# Speech Commands

SPEECH_COMMANDS_KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_COMMANDS_AUXILIARY: tuple[str, ...] = (
    "bed",
    "bird",
    "cat",
    "dog",
    "eight",
    "five",
    "four",
    "happy",
    "house",
    "marvin",
    "nine",
    "one",
    "seven",
    "sheila",
    "six",
    "three",
    "tree",
    "two",
    "wow",
    "zero",
)


def all_words() -> list[str]:
    """Every word (upper case) that any corpus can speak."""
    words: set[str] = set()
    for phrases in _LEXICON.values():
        for phrase in phrases:
            words.update(phrase.split())
    for template in _ASR_TEMPLATES:
        words.update(t for t in template.split() if t not in _LEXICON and not t.endswith("'S"))
    words.update(f"{name}'S" for name in _LEXICON["NAME"])
    for values in _SLOT_VALUES.values():
        for value in values:
            words.update(value.split())
    for _, template in _SNIPS_TEMPLATES:
        words.update(t for t in template.split() if not t.startswith("{"))
    for intent in FLUENT_INTENTS:
        for phrasing in intent.phrasings:
            words.update(phrasing.upper().split())
    words.update(w.upper() for w in SPEECH_COMMANDS_KEYWORDS + SPEECH_COMMANDS_AUXILIARY)
    bad = sorted(w for w in words if not _WORD.fullmatch(w))
    if bad:
        raise UsageError(f"word lists hold words espeak-ng may not speak one-to-one: {bad}")
    return sorted(words)

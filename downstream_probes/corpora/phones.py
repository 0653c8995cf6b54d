"""espeak-ng phoneme mnemonics (American English) mapped to a 39-phone ARPAbet set.

espeak-ng reports phonemes in its own mnemonics (``'aI``, ``@L``, ``t#``, ...), with ``'``/``,`` stress prefixes.
Analysis code (CCA/MI against phone labels) wants the usual 39-phone ARPAbet inventory of CMUdict without stress
digits. Most espeak phonemes are one ARPAbet phone; espeak's r-coloured vowels and ``aI@``-type triphthongs are one
espeak phoneme but two ARPAbet phones (``A@`` in "start" is ``AA R``), so they map to a pair and the alignment
splits their interval (see ``SPLIT_FRACTION``). Pauses (``_``, ``_:``, ...) are silence.

An unknown mnemonic is an error rather than a guess: the corpora only speak words from our own lists, and
``tests/test_corpora.py`` checks that every one of them maps.
"""

from __future__ import annotations

from upstream_mrhubert.errors import MrsuperbError

ARPABET_PHONES: tuple[str, ...] = (
    "AA",
    "AE",
    "AH",
    "AO",
    "AW",
    "AY",
    "B",
    "CH",
    "D",
    "DH",
    "EH",
    "ER",
    "EY",
    "F",
    "G",
    "HH",
    "IH",
    "IY",
    "JH",
    "K",
    "L",
    "M",
    "N",
    "NG",
    "OW",
    "OY",
    "P",
    "R",
    "S",
    "SH",
    "T",
    "TH",
    "UH",
    "UW",
    "V",
    "W",
    "Y",
    "Z",
    "ZH",
)

# Where a two-phone mapping splits the espeak interval: the first phone gets this fraction of it.
SPLIT_FRACTION = 0.6

ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # consonants
    "b": ("B",),
    "d": ("D",),
    "D": ("DH",),
    "dZ": ("JH",),
    "f": ("F",),
    "g": ("G",),
    "h": ("HH",),
    "j": ("Y",),
    ";": ("Y",),  # ";" is espeak's palatal glide between /i/ and a following vowel
    "k": ("K",),
    "x": ("K",),
    "l": ("L",),
    "@L": ("L",),
    "m": ("M",),
    "n": ("N",),
    "n-": ("N",),
    "N": ("NG",),
    "p": ("P",),
    "r": ("R",),
    "r-": ("R",),
    "s": ("S",),
    "S": ("SH",),
    "t": ("T",),
    "t#": ("T",),
    "t2": ("T",),
    "?": ("T",),  # glottal stop, as in "button": CMUdict writes T
    "T": ("TH",),
    "tS": ("CH",),
    "v": ("V",),
    "w": ("W",),
    "z": ("Z",),
    "Z": ("ZH",),
    # monophthongs
    "a": ("AE",),
    "aa": ("AE",),
    "a#": ("AH",),
    "A:": ("AA",),
    "0": ("AA",),
    "O": ("AO",),
    "O:": ("AO",),
    "O2": ("AO",),
    "@": ("AH",),
    "@2": ("AH",),
    "@5": ("AH",),
    "@-": ("AH",),
    "V": ("AH",),
    "02": ("AH",),
    "3": ("ER",),
    "3:": ("ER",),
    "E": ("EH",),
    "e": ("EH",),
    "I": ("IH",),
    "I2": ("IH",),
    "I#": ("IH",),
    "i": ("IY",),
    "i:": ("IY",),
    "U": ("UH",),
    "u": ("UW",),
    "u:": ("UW",),
    # diphthongs
    "aI": ("AY",),
    "aU": ("AW",),
    "eI": ("EY",),
    "oU": ("OW",),
    "OI": ("OY",),
    # r-coloured vowels and triphthongs: one espeak phoneme, two ARPAbet phones
    "A@": ("AA", "R"),
    "O@": ("AO", "R"),
    "o@": ("AO", "R"),
    "e@": ("EH", "R"),
    "i@3": ("IH", "R"),
    "U@": ("UH", "R"),
    "i@": ("Y", "AH"),
    "aI@": ("AY", "ER"),
    "aI3": ("AY", "ER"),
    "aU@": ("AW", "ER"),
}


class UnknownPhonemeError(MrsuperbError, ValueError):
    """espeak-ng produced a phoneme mnemonic that has no ARPAbet mapping in ``ESPEAK_TO_ARPABET``."""


def strip_stress(mnemonic: str) -> str:
    """``'aI`` -> ``aI``: espeak marks primary stress with ``'`` and secondary with ``,``."""
    return mnemonic.lstrip("',")


def is_pause(mnemonic: str) -> bool:
    """espeak's pause phonemes all start with ``_`` (``_``, ``_:``, ``_!``, ...)."""
    return strip_stress(mnemonic).startswith("_")


def to_arpabet(mnemonic: str) -> tuple[str, ...]:
    """ARPAbet phones for one espeak phoneme; ``()`` for a pause."""
    if is_pause(mnemonic):
        return ()
    try:
        return ESPEAK_TO_ARPABET[strip_stress(mnemonic)]
    except KeyError:
        raise UnknownPhonemeError(
            f"espeak-ng phoneme {mnemonic!r} has no ARPAbet mapping; add it to ESPEAK_TO_ARPABET in {__name__}"
        ) from None

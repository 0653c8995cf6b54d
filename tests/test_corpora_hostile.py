"""Corpus builds that must not destroy or leave anything (issue 14, item 4 and the ``mrsuperb corpus`` errors).

``--force`` replaces only a folder holding one of our corpus manifests; a folder that cannot be written or replaced
is one clear error with nothing left behind; a build killed with -9 leaves a ``.X.building-*`` folder that the next
build removes, and its synthesis workers die with it. TextGrids saved by Praat as UTF-16 read like UTF-8 ones.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from downstream_probes.corpora import api
from downstream_probes.corpora.alignments import read_textgrid
from downstream_probes.corpora.common import CorpusError
from downstream_probes.corpora.prepare import PrepareError, load_prepared


def _thesis(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\chapter{Results}\n")
    (folder / "sub" / "figure.pdf").write_bytes(b"%PDF")
    return folder


def test_force_refuses_a_folder_that_is_not_our_corpus(tmp_path: Path) -> None:
    folder = _thesis(tmp_path / "thesis")
    with pytest.raises(CorpusError, match=r"thesis.*manifest\.json.*not a corpus"):
        api.build_corpus("sd", folder, utterances=4, force=True)
    assert (folder / "thesis.tex").read_text() == "\\chapter{Results}\n" and (folder / "sub" / "figure.pdf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_force_refuses_a_foreign_manifest(tmp_path: Path) -> None:
    folder = _thesis(tmp_path / "other")
    (folder / "manifest.json").write_text(json.dumps({"name": "someone else's"}))
    with pytest.raises(CorpusError, match=r"other.*not a corpus"):
        api.build_corpus("sd", folder, utterances=4, force=True)
    assert (folder / "thesis.tex").exists()


@pytest.mark.parametrize("content", ["{", "[1]", '{"schema": "mrsuperb.corpus/1", "seed": NaN}'])
def test_a_damaged_manifest_or_preparation_record_is_named(tmp_path: Path, content: str) -> None:
    (tmp_path / "manifest.json").write_text(content)
    (tmp_path / "prepared.json").write_text(content.replace("corpus", "prepared"))
    with pytest.raises(CorpusError, match=r"manifest\.json (is not readable JSON|has schema 'list')"):
        api.load_manifest(tmp_path)
    with pytest.raises(PrepareError, match=r"prepared\.json (is not readable JSON|has schema 'list')"):
        load_prepared(tmp_path)


def test_unwritable_destination_is_one_clear_error(tmp_path: Path) -> None:
    # /proc refuses new entries even to root: a real read-only folder on any Linux machine.
    target = Path("/proc") / f"mrsuperb-corpus-{uuid.uuid4().hex}"
    with pytest.raises(CorpusError, match=rf"{target.name}.*(cannot write|read-only|not writable)"):
        api.build_corpus("sd", target, utterances=4)


@pytest.mark.slow  # builds a corpus
def test_a_failed_swap_leaves_no_old_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mount point cannot be renamed (EBUSY); the swap failing must leave the corpus and no ``.X.old-*``."""
    corpus = api.build_corpus("sd", tmp_path / "corpus", utterances=4)
    real_replace = os.replace

    def busy(source, target):
        if Path(source) == corpus:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(source))
        return real_replace(source, target)

    monkeypatch.setattr(api.os, "replace", busy)
    with pytest.raises(CorpusError, match=r"corpus.*(mount point|cannot replace)"):
        api.build_corpus("sd", corpus, utterances=4, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert api.load_manifest(corpus)["utterances"] == 4


def test_a_mount_point_is_refused_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "manifest.json").write_text(json.dumps({"schema": api.CORPUS_SCHEMA, "task": "sd"}))  # one of ours
    monkeypatch.setattr(api.os.path, "ismount", lambda path: Path(path) == corpus)
    with pytest.raises(CorpusError, match=r"corpus.*mount point"):
        api.build_corpus("sd", corpus, utterances=4, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


_BUILD = """
import sys
from downstream_probes.corpora import build_corpus
build_corpus("ic", sys.argv[1], utterances=int(sys.argv[2]), workers=2)
"""


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_kill_9_mid_build_leaves_no_workers_and_the_next_build_cleans_up(tmp_path: Path) -> None:
    marker = f"MRSUPERB_TEST_BUILD={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    target = tmp_path / "ic"
    build = subprocess.Popen([sys.executable, "-c", _BUILD, str(target), "400"], env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(_processes_with(marker)) < 3:  # the build and its workers
        time.sleep(0.1)
    assert list(tmp_path.glob(".ic.building-*")), "the build did not start"
    build.send_signal(signal.SIGKILL)
    build.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _processes_with(marker):
        time.sleep(0.2)
    assert _processes_with(marker) == [], "synthesis workers outlived the killed build"
    assert list(tmp_path.glob(".ic.building-*")), "kill -9 cannot clean up; the next build must"

    api.build_corpus("sd", tmp_path / "sd", utterances=4)  # a build next to the dead one's leftovers
    api.build_corpus("ic", target, utterances=api.minimum_utterances("ic"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ic", "sd"]


def test_a_live_build_is_not_cleaned_up_by_another(tmp_path: Path) -> None:
    """The leftovers of a dead build are removed; a running build's folder (its lock held) is kept."""
    live = api.BuildFolder.create(tmp_path / "corpus")
    try:
        dead = tmp_path / ".corpus.building-dead"
        dead.mkdir()
        (dead / "partial.wav").write_bytes(b"x")
        api.remove_dead_builds(tmp_path / "corpus")
        assert live.path.is_dir() and not dead.exists()
    finally:
        live.release()


# --------------------------------------------------------------------------------------------------------------
# TextGrids saved as UTF-16 (Praat does so when a label is not ASCII)

_TEXTGRID = """File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 0.5
tiers? <exists>
size = 1
item []:
    item [1]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 0.5
        intervals: size = 2
        intervals [1]:
            xmin = 0
            xmax = 0.25
            text = "ʃ"
        intervals [2]:
            xmin = 0.25
            xmax = 0.5
            text = "iː"
"""


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-8", b""),
    ],
)
def test_textgrids_in_utf16_or_with_a_bom_are_read(tmp_path: Path, encoding: str, bom: bytes) -> None:
    path = tmp_path / "utt.TextGrid"
    path.write_bytes(bom + _TEXTGRID.encode(encoding))
    grid = read_textgrid(path)
    assert [i.label for i in grid.tier("phones").intervals] == ["ʃ", "iː"]


def test_undecodable_textgrid_is_named(tmp_path: Path) -> None:
    from downstream_probes.corpora.alignments import TextGridError

    path = tmp_path / "latin1.TextGrid"
    path.write_bytes(_TEXTGRID.replace("ʃ", "é").replace("iː", "ü").encode("latin-1"))
    with pytest.raises(TextGridError, match=r"latin1\.TextGrid.*(UTF-8|UTF-16)"):
        read_textgrid(path)

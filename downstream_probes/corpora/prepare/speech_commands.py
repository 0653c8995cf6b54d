"""KS: Speech Commands v0.01 and its test set, each tarball unpacked into its own folder (s3prl's SUPERB docs:
``speech_commands_v0.01/`` and ``speech_commands_test_set_v0.01/``).

s3prl reads the dataset where it lies (its own hash rule splits train/valid), so ``prepare_speech_commands(raw,
out)`` only checks it: the training tree has the 10 keywords and ``_background_noise_`` (the ``_silence_``
examples), the test tree has the 12 class folders (its folder names are the labels). ``validation_list.txt`` and
``testing_list.txt`` ship with the training tarball; s3prl does not read them. The record holds the
``datarc.speech_commands_root`` and ``datarc.speech_commands_test_root`` overrides.
"""

from __future__ import annotations

from downstream_probes.corpora.prepare import common
from downstream_probes.corpora.text import SPEECH_COMMANDS_KEYWORDS

TASK = "ks"
TRAIN_ROOT = "speech_commands_v0.01"
TEST_ROOT = "speech_commands_test_set_v0.01"
BACKGROUND = "_background_noise_"
TEST_CLASSES = (*SPEECH_COMMANDS_KEYWORDS, "_unknown_", "_silence_")
DOWNLOAD = "http://download.tensorflow.org/data/{name}.tar.gz (unpacked into {folder})"


def prepare_speech_commands(raw: common.Folder, out: common.Folder, *, progress: bool = False) -> common.Prepared:
    """Check Speech Commands v0.01 and its test set under ``raw``; record the overrides in ``out/prepared.json``.

    Args:
        raw: the folder holding ``speech_commands_v0.01/`` and ``speech_commands_test_set_v0.01/``.
        out: where ``prepared.json`` goes.
        progress: unused.

    Returns:
        The record: both roots, clips per keyword folder and test class.
    """
    raw_dir = common.folder(raw, "--raw")
    train_download = DOWNLOAD.format(name=TRAIN_ROOT, folder=raw_dir / TRAIN_ROOT)
    test_download = DOWNLOAD.format(name=TEST_ROOT, folder=raw_dir / TEST_ROOT)
    train = common.find_root(raw_dir, (TRAIN_ROOT,), BACKGROUND, train_download)
    test = common.require(raw_dir / TEST_ROOT, test_download)
    counts = {}
    for word in SPEECH_COMMANDS_KEYWORDS:
        counts[word] = len(common.require_nonempty((train / word).glob("*.wav"), train / word, "*.wav", train_download))
    common.require_nonempty((train / BACKGROUND).glob("*.wav"), train / BACKGROUND, "*.wav", train_download)
    common.require_nonempty(test.glob("*/*.wav"), test, "*/*.wav", test_download)
    for class_dir in sorted(path for path in test.iterdir() if path.is_dir()):
        if class_dir.name not in TEST_CLASSES:
            raise common.PrepareError(
                f"{class_dir}: the test tree's folders are its labels and must be among {', '.join(TEST_CLASSES)}; "
                f"remove it or unpack {test_download.split(' ')[0]} again"
            )
        counts[f"test/{class_dir.name}"] = len(list(class_dir.glob("*.wav")))
    out_dir = common.out_folder(out, raw_dir)
    overrides = {"datarc": {"speech_commands_root": str(train), "speech_commands_test_root": str(test)}}
    return common.write_record(common.Prepared(TASK, raw_dir, out_dir, overrides, counts))

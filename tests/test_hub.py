"""Entry points, checkpoint resolution (ckpt, cache folder, download, offline), options and `mrsuperb convert`.

Downloads go to a real HTTP server on localhost; "offline" is a URL on a closed local port. Nothing leaves the machine.
"""

from __future__ import annotations

import ast
import dataclasses
import http.server
import importlib.util
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import pytest

from downstream_probes.cli import main as mrsuperb
from upstream_mrhubert import hub
from upstream_mrhubert.checkpoints import registry
from upstream_mrhubert.checkpoints.download import CKPT_DIR_ENV, CheckpointUnavailableError
from upstream_mrhubert.checkpoints.io import CheckpointError, load_checkpoint
from upstream_mrhubert.testing.tiny import write_tiny_checkpoint
from upstream_mrhubert.testing.tiny_hubert import write_tiny_hubert_checkpoint

HUBERT = "hubert_base_ls960"
CLOSED_PORT_URL = "http://127.0.0.1:9/hubert/hubert_base_ls960.pt"  # port 9 (discard) is closed: refused at once


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_hubert_checkpoint(tmp_path_factory.mktemp("hub") / "tiny_hubert.pt")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CKPT_DIR_ENV, str(folder))
    return folder


def _point_release_at(monkeypatch: pytest.MonkeyPatch, name: str, url: str) -> None:
    release = dataclasses.replace(registry.CHECKPOINTS_BY_NAME[name], url=url)
    monkeypatch.setitem(registry.CHECKPOINTS_BY_NAME, name, release)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server on localhost serving ``tmp_path / "served"``: (base URL, folder, request log)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *args: handler(*args, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served, requests
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------------------------
# Entry points and names


def test_every_registry_name_is_an_installed_entry_point() -> None:
    ours = {
        entry.name: entry
        for entry in metadata.entry_points(group="s3prl.upstreams")
        if entry.value.startswith("upstream_mrhubert.hub:")
    }
    assert set(ours) == set(registry.ALL_UPSTREAM_NAMES)
    for name, entry in ours.items():
        factory = entry.load()
        assert factory is getattr(hub, name) and factory.__name__ == name
        assert factory.__doc__ and "ckpt" in factory.__doc__
        if name in registry.CHECKPOINTS_BY_NAME:
            assert registry.CHECKPOINTS_BY_NAME[name].url in factory.__doc__


def _public_names(module_name: str) -> set[str]:
    """Names ``from module import *`` would bring, read from the source (importing s3prl.hub is slow)."""
    tree = ast.parse(Path(importlib.util.find_spec(module_name).origin).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names if alias.name != "*")
    return {name for name in names if not name.startswith("_")}


def test_no_name_collides_with_s3prl_hub() -> None:
    hub_tree = ast.parse(Path(importlib.util.find_spec("s3prl.hub").origin).read_text())
    s3prl_names = _public_names("s3prl.hub")
    for node in hub_tree.body:
        if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
            s3prl_names |= _public_names(node.module)
    assert {"hubert_base", "multires_hubert_base", "multires_hubert_local", "wavlm"} <= s3prl_names  # parsed right
    assert not s3prl_names & set(registry.ALL_UPSTREAM_NAMES)


# ---------------------------------------------------------------------------------------------------------------
# Resolution order


def test_ckpt_argument_comes_first(tiny_hubert: Path, cache_dir: Path, tmp_path: Path) -> None:
    cached = write_tiny_hubert_checkpoint(cache_dir / registry.CHECKPOINTS_BY_NAME[HUBERT].filename, seed=1)
    upstream = hub.hubert_base_ls960(ckpt=str(tiny_hubert))
    assert upstream.checkpoint_path == str(tiny_hubert) != str(cached)
    assert upstream.name == HUBERT
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        hub.hubert_base_ls960(ckpt=str(tmp_path / "missing.pt"))


def test_cache_folder_comes_next(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _point_release_at(monkeypatch, HUBERT, CLOSED_PORT_URL)  # a download attempt would fail
    cached = write_tiny_hubert_checkpoint(cache_dir / registry.CHECKPOINTS_BY_NAME[HUBERT].filename)
    assert hub.hubert_base_ls960().checkpoint_path == str(cached)


def test_offline_error_names_url_and_folder(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _point_release_at(monkeypatch, HUBERT, CLOSED_PORT_URL)
    with pytest.raises(CheckpointUnavailableError) as caught:
        hub.hubert_base_ls960()
    message = str(caught.value)
    assert CLOSED_PORT_URL in message and str(cache_dir) in message
    assert isinstance(caught.value, FileNotFoundError)
    assert list(cache_dir.iterdir()) == []  # no half-written file left


def test_download_is_atomic_shows_progress_and_refreshes(
    tiny_hubert: Path,
    cache_dir: Path,
    file_server: tuple[str, Path, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base_url, served, requests = file_server
    (served / "release.pt").write_bytes(tiny_hubert.read_bytes())
    _point_release_at(monkeypatch, HUBERT, f"{base_url}/release.pt")
    target = cache_dir / registry.CHECKPOINTS_BY_NAME[HUBERT].filename

    upstream = hub.hubert_base_ls960()
    assert upstream.checkpoint_path == str(target) and target.read_bytes() == tiny_hubert.read_bytes()
    assert len(requests) == 1 and target.name in capsys.readouterr().err  # tqdm progress bar
    hub.hubert_base_ls960()
    assert len(requests) == 1  # cached
    hub.hubert_base_ls960(refresh=True)
    assert len(requests) == 2
    assert sorted(path.name for path in cache_dir.iterdir()) == [target.name]  # no .part left

    # A URL given as ckpt is downloaded into the cache folder too.
    assert hub.hubert_base_ls960(ckpt=f"{base_url}/release.pt").checkpoint_path == str(cache_dir / "release.pt")
    with pytest.raises(CheckpointUnavailableError, match="nothing-here.pt"):
        hub.hubert_base_ls960(ckpt=f"{base_url}/nothing-here.pt")  # HTTP 404


def test_local_upstream_requires_ckpt(cache_dir: Path) -> None:
    with pytest.raises(ValueError, match="ckpt"):
        hub.mrhubert_local()


def test_family_mismatch_is_explained(tiny_hubert: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="hubert_base_ls960"):
        hub.mrhubert_b2a(ckpt=str(tiny_hubert))
    mrhubert_file = write_tiny_checkpoint(tmp_path / "tiny_mrhubert.pt")
    with pytest.raises(CheckpointError, match="mrhubert_local"):
        hub.hubert_base_ls960(ckpt=str(mrhubert_file))


def test_converted_checkpoints_load_too(tmp_path: Path) -> None:
    fairseq_file = write_tiny_checkpoint(tmp_path / "tiny_mrhubert.pt")
    converted = tmp_path / "converted.pt"
    assert mrsuperb(["convert", str(fairseq_file), str(converted)]) == 0
    from_fairseq, from_converted = hub.mrhubert_local(ckpt=str(fairseq_file)), hub.mrhubert_local(ckpt=str(converted))
    assert from_converted.layer_names == from_fairseq.layer_names
    for (name, ours), theirs in zip(
        from_fairseq.state_dict().items(), from_converted.state_dict().values(), strict=False
    ):
        assert ours.equal(theirs), name


# ---------------------------------------------------------------------------------------------------------------
# Options


def test_options_from_yaml_and_keywords(tiny_hubert: Path, tmp_path: Path) -> None:
    config = tmp_path / "upstream.yaml"
    config.write_text("include_block_outputs: true\n")
    assert hub.hubert_base_ls960(ckpt=str(tiny_hubert), model_config=str(config)).include_block_outputs
    assert not hub.hubert_base_ls960(
        ckpt=str(tiny_hubert), model_config=str(config), include_block_outputs=False
    ).include_block_outputs  # keywords win

    config.write_text("include_block_output: true\n")
    with pytest.raises(ValueError, match="include_block_output"):
        hub.hubert_base_ls960(ckpt=str(tiny_hubert), model_config=str(config))
    config.write_text("pre_residual: 'yes'\n")
    with pytest.raises(ValueError, match="true or false"):
        hub.hubert_base_ls960(ckpt=str(tiny_hubert), model_config=str(config))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        hub.hubert_base_ls960(ckpt=str(tiny_hubert), model_config=str(tmp_path / "nope.yaml"))
    with pytest.raises(ValueError, match="HuBERT has no residual"):
        hub.hubert_base_ls960(ckpt=str(tiny_hubert), pre_residual=True)
    with pytest.raises(ValueError, match="unknown upstream option"):
        hub.hubert_base_ls960(ckpt=str(tiny_hubert), layers=3)


# ---------------------------------------------------------------------------------------------------------------
# mrsuperb convert


def test_convert_command(tiny_hubert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "converted.pt"
    assert mrsuperb(["convert", str(tiny_hubert), str(output)]) == 0
    assert f"-u hubert_local -k {output}" in capsys.readouterr().out
    converted, original = load_checkpoint(output), load_checkpoint(tiny_hubert)
    assert converted.source_format == "s3prl_converted"
    assert converted.model_cfg == original.model_cfg and converted.state_dict.keys() == original.state_dict.keys()

    assert mrsuperb(["convert", str(tiny_hubert), str(output)]) == 2  # exists
    assert "--force" in capsys.readouterr().err
    assert mrsuperb(["convert", "--force", str(output), str(tmp_path / "again.pt")]) == 2
    assert "already in s3prl's converted format" in capsys.readouterr().err
    assert not (tmp_path / "again.pt").exists()


def test_readme_lists_every_upstream() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Upstreams", 1)[1]
    for name in registry.ALL_UPSTREAM_NAMES:
        assert f"| `{name}` |" in section, name

"""Upstreams from the ``s3prl.upstreams`` entry-point group: discovery, collisions, and training with a plugin."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest

from downstream_probes.s3prl import compat as s3prl_compat
from downstream_probes.s3prl import plugins

s3prl_compat.apply()

import s3prl.hub  # noqa: E402

TOY_MODULE = '''
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence


class ToyUpstream(nn.Module):
    """Three 20 ms layers: a strided conv and two tanh layers."""

    layer_names = ["T0", "T1", "T2"]

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 8, kernel_size=400, stride=320, padding=40)
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))

    def get_downsample_rates(self, key):
        return 320

    def forward(self, wavs):
        hidden = self.conv(pad_sequence(wavs, batch_first=True).unsqueeze(1)).transpose(1, 2)
        states = [hidden]
        for layer in self.layers:
            hidden = torch.tanh(layer(hidden))
            states.append(hidden)
        return {"hidden_states": states, "last_hidden_state": hidden}


def {name}(ckpt=None, model_config=None, refresh=False, **kwargs):
    return ToyUpstream()
'''


def make_fake_distribution(root: Path, dist_name: str, module: str, upstream_name: str) -> Path:
    """A module plus an installed-package record (``.dist-info``) declaring it in ``s3prl.upstreams``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(TOY_MODULE.replace("{name}", upstream_name))
    info = root / f"{dist_name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[s3prl.upstreams]\n{upstream_name} = {module}:{upstream_name}\n")
    return info


def entry_points_of(*dist_infos: Path) -> list[metadata.EntryPoint]:
    return [ep for info in dist_infos for ep in metadata.PathDistribution(info).entry_points]


def test_our_upstreams_are_discovered() -> None:
    found = plugins.discover_upstream_plugins()
    assert found["mrhubert_b4a"].distribution == "mrsuperb"
    assert found["mrhubert_b4a"].target == "upstream_mrhubert.hub:mrhubert_b4a"


def test_same_name_from_two_distributions_names_both(tmp_path: Path) -> None:
    first = make_fake_distribution(tmp_path / "a", "pkg-one", "one_hub", "shared_name")
    second = make_fake_distribution(tmp_path / "b", "pkg-two", "two_hub", "shared_name")
    with pytest.raises(plugins.UpstreamNameCollisionError) as error:
        plugins.discover_upstream_plugins(entry_points_of(first, second))
    message = str(error.value)
    assert "'shared_name'" in message and "pkg-one" in message and "pkg-two" in message
    assert "one_hub:shared_name" in message and "two_hub:shared_name" in message


def test_name_s3prl_already_has_is_refused(tmp_path: Path) -> None:
    info = make_fake_distribution(tmp_path, "pkg-clash", "clash_hub", "hubert")
    found = plugins.discover_upstream_plugins(entry_points_of(info))
    with pytest.raises(plugins.UpstreamNameCollisionError, match=r"pkg-clash.*s3prl itself \(s3prl\.hub\.hubert\)"):
        plugins.register_entry_point_upstreams(s3prl.hub, found)


def test_registration_is_lazy_and_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_fake_distribution(tmp_path, "toy-lazy-pkg", "toy_lazy_hub", "toy_lazy")
    monkeypatch.syspath_prepend(str(tmp_path))
    registered = plugins.register_entry_point_upstreams()
    try:
        assert registered["toy_lazy"].distribution == "toy-lazy-pkg"
        assert "toy_lazy_hub" not in sys.modules  # nothing imported until the upstream is asked for
        plugins.register_entry_point_upstreams()
        model = s3prl.hub.toy_lazy()
        assert model.layer_names == ["T0", "T1", "T2"]
        assert "toy_lazy" in s3prl.hub.options()
    finally:
        delattr(s3prl.hub, "toy_lazy")
        sys.modules.pop("toy_lazy_hub", None)


def test_run_downstream_lists_a_plugin_from_dist_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from downstream_probes.s3prl import run_downstream

    make_fake_distribution(tmp_path, "toy-probe-pkg", "toy_probe_hub", "toy_probe")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(SystemExit):
            run_downstream.main(["-h"])
        assert "toy_probe" in capsys.readouterr().out
        assert "toy_probe_hub" not in sys.modules  # listed without importing the plugin
    finally:
        if hasattr(s3prl.hub, "toy_probe"):
            delattr(s3prl.hub, "toy_probe")
        sys.modules.pop("toy_probe_hub", None)


def test_entry_point_upstream_trains_a_task(tiny_ic_run) -> None:
    """``mrhubert_local`` exists in s3prl's hub only through the ``s3prl.upstreams`` entry point (the route any
    plugin takes); the shared tiny run trained IC with it through s3prl's runner."""
    plugin = plugins.plugin_of(getattr(s3prl.hub, "mrhubert_local", None))  # registered by run_downstream.py
    assert plugin is not None and plugin.distribution == "mrsuperb"
    assert plugin.target == "upstream_mrhubert.hub:mrhubert_local"
    results = json.loads((tiny_ic_run.expdir / "results.json").read_text())
    assert results["upstream"] == "mrhubert_local" and results["task"] == "ic"
    assert set(results["metrics"]) == {"dev", "test"} and 0.0 <= results["metrics"]["dev"]["acc"] <= 1.0
    assert (tiny_ic_run.expdir / f"states-{tiny_ic_run.steps}.ckpt").is_file()


def test_upstreams_command_lists_package_and_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from downstream_probes import cli

    make_fake_distribution(tmp_path, "toy-listed-pkg", "toy_listed_hub", "toy_listed")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MRHUBERT_CKPT_DIR", str(tmp_path / "cache"))
    assert cli.main(["upstreams", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["toy_listed"]["package"] == "toy-listed-pkg" and rows["toy_listed"]["checkpoint"] == "unknown"
    assert rows["mrhubert_local"]["checkpoint"] == "local (-k PATH)"
    assert rows["mrhubert_b4a"]["checkpoint"] == "download" and rows["mrhubert_b4a"]["detail"].endswith("b4-a.pt")
    from upstream_mrhubert.checkpoints import registry

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / registry.CHECKPOINTS_BY_NAME["mrhubert_b4a"].filename).write_bytes(b"x")
    assert cli.main(["upstreams"]) == 0
    table = capsys.readouterr().out
    assert any(line.startswith("mrhubert_b4a") and "cached" in line for line in table.splitlines())

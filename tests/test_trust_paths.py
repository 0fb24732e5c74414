"""Writes stay inside their folder; untrusted YAML and values are bounded in what they cost."""
from __future__ import annotations

import os
import stat

import pytest
import yaml
from conftest import tiny_spec

from harness.cli import main
from harness.core import files
from harness.core.errors import HarnessError, shown


@pytest.mark.parametrize("name", ["../x", "/tmp/abs", ".", "..", "a/b", "", "-rf", ".hidden", 7])
def test_a_sweep_name_that_is_not_a_simple_name_is_refused_and_nothing_written(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(tiny_spec(name=name)))
    assert main(["sweep", "spec.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: sweep spec key 'name' (the sweep folder's name) must be a simple name")
    assert err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["spec.yaml"] and not (tmp_path.parent / "x").exists()


def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path, capsys):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))
    (tmp_path / "bomb.yaml").write_text(bomb)
    assert len(bomb) < 400
    assert main(["train", str(tmp_path / "bomb.yaml")]) == 2
    err = capsys.readouterr().err
    assert "expands beyond 100000 values through its aliases" in err and len(err) < 300


def test_a_self_referring_yaml_is_refused(tmp_path):
    (tmp_path / "loop.yaml").write_text("a: &a [1, *a]\n")
    with pytest.raises(HarnessError, match="expands beyond"):
        files.read_yaml_mapping(tmp_path / "loop.yaml", "config file")


def test_a_few_aliases_are_fine(tmp_path):
    (tmp_path / "ok.yaml").write_text("o: &o {steps: 5}\na: *o\nb: *o\n")
    assert files.read_yaml_mapping(tmp_path / "ok.yaml", "spec") == {"o": {"steps": 5}, "a": {"steps": 5},
                                                                     "b": {"steps": 5}}


def test_non_utf8_yaml_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "latin.yaml").write_bytes(b"seed: 1 # caf\xe9\n")
    assert main(["train", str(tmp_path / "latin.yaml")]) == 2
    assert capsys.readouterr().err.endswith("is not UTF-8 text (byte 13)\n")


def test_error_messages_truncate_echoed_values(tmp_path, capsys):
    huge = "x" * 100_000
    assert main(["train", f"output_dir={tmp_path}", f"algorithm.hparams.optimizer={huge}"]) == 2
    err = capsys.readouterr().err
    assert len(err) < 300 and "(100002 characters)" in err
    assert shown("ab") == "'ab'" and shown(list(range(100))).endswith("(390 characters)")


def test_written_files_are_readable_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        files.write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        os.umask(0o077)
        files.write_json(tmp_path / "b.json", {})
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_device_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", f"output_dir={tmp_path / 'runs'}", "device=cuda", "steps=2"]) == 2
    assert capsys.readouterr().err == ("harness: error: device 'cuda': this machine has no usable CUDA GPU; "
                                       "accepted here: auto, cpu\n")
    assert not (tmp_path / "runs").exists()


def test_a_malformed_board_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "b.yaml").write_text("name: [unclosed\n")
    assert main(["leaderboard", "render", str(tmp_path / "b.yaml"), "--board-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1

"""Appended JSON-lines files survive a kill mid-append; plugins that fail to load are never silent."""
import sys
import textwrap
import warnings

import pytest

from harness.core import registry
from harness.core.errors import HarnessError
from harness.core.files import TornLineWarning, read_jsonl
from harness.core.registry import ALGORITHMS
from harness.runs.run import train


class Interrupted(Exception):
    pass


def metrics_of(run):
    return [(r["step"], r["train_logs"], r["metrics"]) for r in read_jsonl(run / "results.jsonl")]


def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"step": 10}\n{"step": 20}\n{"step": 3')
    with pytest.warns(TornLineWarning, match="results.jsonl: dropped its torn last line \\(line 3"):
        assert read_jsonl(path) == [{"step": 10}, {"step": 20}]
    path.write_text('{"step": 10}\n{"step": 20}')  # complete, only its newline missing: kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_jsonl(path) == [{"step": 10}, {"step": 20}]


@pytest.mark.parametrize("text, line", [('{"step": 10}\n{"ste\n{"step": 30}\n', 2), ('{"step": 10}\n{"step": 2\n', 2)])
def test_a_bad_line_that_is_not_a_torn_last_one_is_an_error_naming_file_and_line(tmp_path, text, line):
    path = tmp_path / "results.jsonl"
    path.write_text(text)
    with pytest.raises(HarnessError, match=f"results.jsonl: line {line} is not valid JSON"):
        read_jsonl(path)


def test_a_run_killed_with_a_torn_last_line_resumes_to_the_uninterrupted_result(tiny_cfg, tmp_path, monkeypatch):
    whole = train(tiny_cfg("run_dir=" + str(tmp_path / "whole")))
    cls = ALGORITHMS.get("erm").obj
    original = cls.update

    def dies_at_step_50(self, batch, step):
        if step == 50:
            raise Interrupted
        return original(self, batch, step)

    cfg = tiny_cfg("run_dir=" + str(tmp_path / "cut"))
    with monkeypatch.context() as m:
        m.setattr(cls, "update", dies_at_step_50)
        with pytest.raises(Interrupted):
            train(cfg)
    results = tmp_path / "cut" / "results.jsonl"
    with open(results, "a") as fh:  # what a kill in the middle of the next append leaves
        fh.write('{"metrics": {"test": {"avg_acc": 0.5')
    with pytest.warns(TornLineWarning):
        train(cfg)
    assert metrics_of(tmp_path / "cut") == metrics_of(whole)
    assert results.read_text().endswith("\n")


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Plugin loading as in a new process; restored afterwards."""
    registry.load_plugins()
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_failure", None)


def test_a_failing_entry_point_is_an_error_now_and_on_every_later_call(fresh_plugins, monkeypatch):
    class Broken:
        name, value = "broken", "broken_plugin:register"

        def load(self):
            raise RuntimeError("boom at import")

    monkeypatch.setattr(registry, "entry_points", lambda group: [Broken()])
    message = r"plugin 'broken' \(broken_plugin:register\) failed to load \(RuntimeError: boom at import\)"
    with pytest.raises(HarnessError, match=message):
        ALGORITHMS.names()
    with pytest.raises(HarnessError, match=message):  # the registry is not pretended complete
        ALGORITHMS.get("erm")


def test_a_failing_builtin_plugin_module_is_named(fresh_plugins, monkeypatch, tmp_path):
    (tmp_path / "half_plugin.py").write_text(textwrap.dedent('''
        from harness.core.registry import ALGORITHMS
        from harness.algorithms.erm import ERM

        ALGORITHMS.register("half_registered")(type("Half", (ERM,), {"__doc__": "Half."}))
        raise ValueError("a bug after the first registration")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_BUILTIN_MODULES", (*registry._BUILTIN_MODULES, "half_plugin"))
    try:
        for _ in range(2):
            with pytest.raises(HarnessError, match="built-in plugin module 'half_plugin' failed to load "
                                                   r"\(ValueError: a bug after the first registration\)"):
                ALGORITHMS.names()
    finally:
        ALGORITHMS._entries.pop("half_registered", None)
        sys.modules.pop("half_plugin", None)

import sys
import textwrap

import pytest
from conftest import install_entry_point

from harness.core import registry
from harness.core.registry import ALGORITHMS, Hparam, Registry, choice, draw_hparams, log_uniform, uniform


def test_draw_zero_is_the_defaults():
    space = {"lr": Hparam(1e-3, log_uniform(1e-5, 1e-1)), "bs": Hparam(32, choice(8, 16))}
    assert draw_hparams(space, 0) == {"lr": 1e-3, "bs": 32}


def test_adding_an_hparam_does_not_shift_the_others():
    space = {"lr": Hparam(1e-3, log_uniform(1e-5, 1e-1)), "wd": Hparam(0.0, log_uniform(1e-6, 1e-2))}
    bigger = {"a_new_one": Hparam(1.0, uniform(0, 1)), **space, "eta": Hparam(0.1, uniform(0, 1))}
    for draw in (1, 2, 7):
        before, after = draw_hparams(space, draw), draw_hparams(bigger, draw)
        assert {k: after[k] for k in before} == before
    assert draw_hparams(space, 1) != draw_hparams(space, 2)
    assert 1e-5 <= draw_hparams(space, 3)["lr"] <= 1e-1


def test_class_hparams_merge_along_the_bases():
    reg = Registry("things")

    class Base:
        """A base."""
        hparams = {"lr": Hparam(0.1, uniform(0, 1))}

    @reg.register("child")
    class Child(Base):
        """A child with its own knob.

        More text."""
        hparams = {"eta": Hparam(0.5, uniform(0, 1))}

    entry = reg._entries["child"]
    assert set(entry.hparams) == {"lr", "eta"}
    assert entry.description == "A child with its own knob."


def test_unknown_name_lists_the_accepted_ones():
    with pytest.raises(Exception, match="unknown algorithm 'nope'; accepted: .*erm.*group_dro"):
        ALGORITHMS.get("nope")


def test_third_party_registration_through_an_entry_point(tmp_path, monkeypatch):
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent('''
        from harness.models.algorithm import Algorithm
        from harness.core.registry import ALGORITHMS

        @ALGORITHMS.register("my_algo")
        class MyAlgo(Algorithm):
            """A plugin algorithm."""
    '''))
    install_entry_point(tmp_path, "my_algo", "my_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    try:
        assert ALGORITHMS.get("my_algo").description == "A plugin algorithm."
    finally:
        ALGORITHMS._entries.pop("my_algo", None)
        sys.modules.pop("my_plugin", None)

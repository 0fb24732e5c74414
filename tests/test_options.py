"""Declared options: unions, lists, mappings and paths accept and refuse as they say, in one line
that names the key and what is accepted, in the words `harness list` shows."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.commands.list import settings
from harness.core.errors import HarnessError
from harness.core.options import Option, check_options
from harness.core.registry import Entry, Hparam, choice, draw_hparams, fixed, uniform

THREADS = Option("auto", ("auto", Option(type=int, low=1)))
SPLITS = Option("auto", ("auto", Option(type=list, items=Option(type=str, noun="split name"))))
CS = Option([1.0], list, items=Option(type=float, low=0, low_open=True), non_empty=True)
TASK = Option(type=(Option(type=str, noun="task"),
                    Option(type=dict, fields={"name": Option(type=str, required=True), "options": Option({}, dict)})))


@pytest.mark.parametrize("option, words", [
    (Option(60, int, low=1), "an integer >= 1"),
    (Option(0.5, float, low=0, high=1, high_open=True), "a finite number >= 0 and < 1"),
    (Option(None, str, nullable=True), "a non-empty string or null"),
    (Option("a", str, choices=("a", "b")), "one of a, b"),
    (THREADS, "auto or an integer >= 1"),
    (Option("auto", ("auto", Option(type=int, low=0))), "auto or an integer >= 0"),
    (SPLITS, "auto or a list of split names"),
    (CS, "a non-empty list of finite numbers > 0"),
    (Option(type=list, items=TASK, non_empty=True), "a non-empty list of tasks or mappings with keys name, options"),
    (Option(type=list, items=Option(type=str, choices=("x", "y"))), "a list of values among x, y"),
    (Option(None, Path, nullable=True), "a path or null"),
    (Option(None, (None, True, Option(type=int))), "null or true or an integer"),
    (Option(type=str, noun="id"), "an id"),
])
def test_accepts_words_what_an_option_accepts(option, words):
    assert option.accepts() == words


@pytest.mark.parametrize("option, value, expected", [
    (THREADS, "auto", "auto"), (THREADS, 4, 4),
    (SPLITS, "auto", "auto"), (SPLITS, ["val", "test"], ["val", "test"]), (SPLITS, ("val",), ("val",)),
    (CS, [1, 0.5], [1.0, 0.5]),
    (TASK, "digits", "digits"), (TASK, {"name": "digits"}, {"name": "digits", "options": {}}),
    (Option(None, Path, nullable=True), "runs/x", "runs/x"), (Option(None, Path, nullable=True), None, None),
    (Option(type=float), 3, 3.0),
])
def test_check_returns_the_accepted_value(option, value, expected):
    result = option.check("key", value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("option, value, message", [
    (THREADS, 0, "threads must be auto or an integer >= 1, got 0"),
    (THREADS, True, "threads must be auto or an integer >= 1, got True"),  # a bool is not an integer
    (THREADS, "Auto", "threads must be auto or an integer >= 1, got 'Auto'"),
    (THREADS, 2.0, "threads must be auto or an integer >= 1, got 2.0"),
    (SPLITS, "val", "threads must be auto or a list of split names, got 'val'"),
    (SPLITS, ["val", ""], "threads must be auto or a list of split names, got ['val', '']"),
    (CS, [], "threads must be a non-empty list of finite numbers > 0, got []"),
    (CS, [1.0, 0], "each item of threads must be a finite number > 0, got 0"),
    (CS, [float("nan")], "each item of threads must be a finite number > 0, got nan"),
    (Option(type=float), 10 ** 400, "threads must be a finite number, got 1000"),  # too large for a float
    (TASK, {"name": "digits", "colour": 1}, "threads must be a task or a mapping with keys name, options, got"),
    (TASK, {"options": {}}, "threads must be a task or a mapping with keys name, options, got"),
    (Option(None, Path), "", "threads must be a path, got ''"),
    (Option(None, (None, True)), 1, "threads must be null or true, got 1"),
])
def test_a_refused_value_is_one_line_naming_the_key_and_what_is_accepted(option, value, message):
    with pytest.raises(HarnessError) as raised:
        option.check("threads", value)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_check_options_fills_copies_of_defaults_names_unknown_and_missing_keys():
    declared = {"tasks": Option([], list, "downstream tasks", required=True), "cs": CS}
    checked = check_options("probe key", {"tasks": ["a"]}, declared, prefix="probe.")
    assert checked == {"tasks": ["a"], "cs": [1.0]}
    checked["cs"].append(2.0)
    assert CS.default == [1.0]  # a default is never shared with what was returned
    with pytest.raises(HarnessError, match=r"^unknown probe key 'probe.c'; accepted: probe.tasks, probe.cs$"):
        check_options("probe key", {"tasks": ["a"], "c": 1}, declared, prefix="probe.")
    with pytest.raises(HarnessError, match=r"^probe.tasks is required: downstream tasks$"):
        check_options("probe key", {}, declared, prefix="probe.")
    with pytest.raises(HarnessError, match=r"^each item of cs of board b must be a finite number > 0, got -1$"):
        check_options("key of board b", {"tasks": [], "cs": [-1]}, declared, prefix="", suffix=" of board b")
    with pytest.raises(HarnessError, match=r"^slurm launcher option 'cs' must be a non-empty list"):
        check_options("slurm launcher option", {"tasks": [], "cs": 1}, declared)


def test_an_hparam_is_an_option_with_a_draw_and_checks_each_item_of_a_sequence():
    lr = Hparam(1e-3, uniform(0, 1), "learning rate", low=0, low_open=True)
    assert isinstance(lr, Option) and (lr.type, lr.low, lr.low_open, lr.help) == (float, 0, True, "learning rate")
    assert lr.accepts() == "a finite number > 0"
    channels = Hparam((16, 32), fixed((16, 32)), "channels", low=1)
    assert channels.accepts() == "a list of integers >= 1" and channels.check("c", [4, 8]) == [4, 8]
    with pytest.raises(HarnessError, match="^each item of c must be an integer >= 1, got 0$"):
        channels.check("c", (4, 0))
    optimizer = Hparam("adam", choice("adam", "sgd"), choices=("adam", "sgd"))
    space = {"lr": lr, "channels": channels, "optimizer": optimizer}
    assert draw_hparams(space, 0) == {"lr": 1e-3, "channels": (16, 32), "optimizer": "adam"}
    for draw in range(1, 20):
        for name, value in draw_hparams(space, draw).items():
            assert space[name].check(name, value) == value
    with pytest.raises(TypeError, match="is not a bool, int, float or str"):
        Hparam({"a": 1}, fixed({"a": 1}))


def test_harness_list_shows_a_union_in_words():
    entry = Entry("x", object, "", options={"threads": Option("auto", ("auto", Option(type=int, low=1)), "cores"),
                                             "partition": Option(None, str, nullable=True)})
    assert settings(entry).splitlines() == ["threads='auto': auto or an integer >= 1; cores",
                                            "partition=None: a non-empty string or null"]


MEMBERS = st.sampled_from([
    Option(type=int, low=1), Option(type=int, high=0), Option(type=float, low=0, low_open=True), Option(type=bool),
    Option(type=str), Option(type=str, choices=("a", "b")), Option(None, Path), Option(type=dict),
    Option(type=list, items=Option(type=int, low=0)), Option(type=list, non_empty=True)])
UNIONS = st.lists(st.one_of(MEMBERS, st.sampled_from(["auto", None, 0, True])), min_size=1, max_size=4).map(tuple)
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 0.5, -1.5, float("inf")]),
                   st.sampled_from(["", "a", "auto", "c"]), st.lists(st.integers(-1, 2), max_size=2),
                   st.dictionaries(st.sampled_from(["k"]), st.integers(), max_size=1))


def _accepted(member: Option | object, value: object) -> tuple[bool, object]:
    if not isinstance(member, Option):
        return type(value) is type(member) and value == member, value
    try:
        return True, member.check("m", value)
    except HarnessError:
        return False, None


@given(members=UNIONS, value=VALUES)
def test_a_union_accepts_what_its_first_accepting_member_accepts_and_refuses_the_rest(members, value):
    union = Option(None, members)
    outcomes = [_accepted(m, value) for m in members]
    accepted = [result for ok, result in outcomes if ok]
    try:
        result = union.check("key", value)
    except HarnessError as exc:
        assert not accepted
        assert str(exc).startswith(f"key must be {union.accepts()}, got ") and "\n" not in str(exc)
    else:
        assert accepted and result == accepted[0]


def test_every_declared_basic_config_key_accepts_its_default():
    from harness.core import config

    for path, option in config.OPTIONS.items():
        node = config.DEFAULTS
        for part in path.split("."):
            node = node[part]
        assert option.check(path, node) == node, path

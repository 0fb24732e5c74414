"""Trial identity: the hash of the resolved config names a trial's folder."""
import subprocess
import sys

import pytest

from harness.core import config

# Pinned: a change here renames every existing run folder, so it must be deliberate.
DEFAULT_HASH = "ca7f82fe7769"
GROUP_DRO_HASH = "29a23877a069"


def leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return [*value, 1]
    if isinstance(value, dict):
        return {"extra": 1}
    return "set"  # None


def with_leaf(cfg, path, value):
    import copy
    out = copy.deepcopy(cfg)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def test_hash_is_pinned_and_the_same_in_another_process():
    assert config.config_hash(config.resolve({})) == DEFAULT_HASH
    assert config.config_hash(config.resolve({"algorithm": {"name": "group_dro"}})) == GROUP_DRO_HASH
    code = "from harness.core import config; print(config.config_hash(config.resolve({})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == DEFAULT_HASH


def test_hash_ignores_key_order():
    cfg = config.resolve({"algorithm": {"name": "group_dro"}})
    reordered = {k: cfg[k] for k in reversed(list(cfg))}
    reordered["algorithm"] = {k: cfg["algorithm"][k] for k in reversed(list(cfg["algorithm"]))}
    assert config.config_hash(reordered) == GROUP_DRO_HASH


@pytest.mark.parametrize("algorithm", ["erm", "group_dro"])
def test_every_config_field_changes_the_hash_except_where_and_how_fast(algorithm):
    cfg = config.resolve({"algorithm": {"name": algorithm}, "backbone": {"name": "mlp", "options": {"width": 64}}})
    base = config.config_hash(cfg)
    paths = list(leaves(cfg))
    assert len(paths) >= 20  # every hparam, option and top-level key is a leaf here
    for path, value in paths:
        digest = config.config_hash(with_leaf(cfg, path, changed(value)))
        if path[0] in config.NOT_HASHED:
            assert digest == base, path
        else:
            assert digest != base, path
    # adding a key to a free-form mapping is a change too
    assert config.config_hash(with_leaf(cfg, ("dataset", "options"), {"seed": 3})) != base


def test_inferred_groups_are_identified_by_the_discovery_folder_name_not_its_path():
    cfg = config.resolve({"algorithm": {"name": "group_dro"}, "groups": "inferred:/sweeps/a/0123456789ab"})
    moved = dict(cfg, groups="inferred:/elsewhere/b/0123456789ab")
    other = dict(cfg, groups="inferred:/sweeps/a/ba9876543210")
    assert config.config_hash(moved) == config.config_hash(cfg)
    assert config.config_hash(other) != config.config_hash(cfg)

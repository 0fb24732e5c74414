"""Submission bundles: our runs exported and entered give the sweep's own numbers; the docs'
plain-PyTorch example is entered as claimed; a malformed bundle is one line, exit 2, nothing
written."""
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

import harness.datasets  # noqa: F401 - registers colored_digits
from harness.cli import main
from harness.core.registry import DATASETS
from harness.leaderboards import board as boards
from harness.leaderboards import bundle, levels

ROOT = Path(__file__).parent.parent
SMOKE_REFS = boards.BOARD_DIR / "references" / "worst_group_smoke"


def example_script() -> str:
    text = (ROOT / "docs" / "leaderboard-bundles.md").read_text()
    return re.search(r"```python example\n(.*?)```", text, re.S).group(1)


@pytest.fixture(scope="module")
def example_bundle(tmp_path_factory):
    """The docs' example run on colored_digits' arrays: a bundle of 3 seeds x 3 checkpoints."""
    folder = tmp_path_factory.mktemp("example")
    dataset = DATASETS.get("colored_digits").obj()
    import torch
    arrays = {"train.x": dataset.splits["train"].inputs(torch.arange(len(dataset.splits["train"]))).numpy(),
              "train.y": dataset.splits["train"].y.numpy()}
    for split in ("val", "test"):
        part = dataset.splits[split]
        arrays[f"{split}.ids"], arrays[f"{split}.x"] = part.ids.numpy(), part.inputs(torch.arange(len(part))).numpy()
    np.savez(folder / "data.npz", **arrays)
    (folder / "example.py").write_text(example_script())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    subprocess.run([sys.executable, str(folder / "example.py"), str(folder / "data.npz"),
                    str(SMOKE_REFS / "colored_digits.json"), str(folder / "bundle")], check=True, env=env, cwd=folder)
    return folder / "bundle"


@pytest.fixture
def smoke_dir(tmp_path):
    """An empty board folder of worst_group_smoke, with the board's published references."""
    folder = tmp_path / "board"
    shutil.copytree(SMOKE_REFS, folder / "references" / "worst_group_smoke")
    return folder


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def submit(bundle_path, folder, board="worst_group_smoke"):
    return main(["leaderboard", "submit", board, str(bundle_path), "--board-dir", str(folder)])


def test_the_example_never_imports_the_harness():
    assert "harness" not in example_script()


def test_the_plain_pytorch_example_is_entered_as_claimed_and_verifies(example_bundle, smoke_dir, capsys):
    assert submit(example_bundle, smoke_dir) == 0
    path = smoke_dir / "entries" / "worst_group_smoke" / "plain_logreg--none.json"
    entry = json.loads(path.read_text())
    assert levels.level_of(entry)[0] == "claimed" and entry["selection"] == "val-worst-class"
    assert entry["results"]["colored_digits"]["seeds"] == [0, 1, 2]
    assert main(["leaderboard", "verify", "worst_group_smoke", "--board-dir", str(smoke_dir)]) == 0
    assert "claimed" in (smoke_dir / "worst_group_smoke.md").read_text()
    # entering it again would replace the entry: refused
    before = snapshot(smoke_dir)
    assert submit(example_bundle, smoke_dir) == 2 and snapshot(smoke_dir) == before
    assert "already has an entry" in capsys.readouterr().err


def test_claimed_numbers_are_ignored(example_bundle, smoke_dir, tmp_path):
    forged = tmp_path / "forged"
    shutil.copytree(example_bundle, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["claimed"] = {"colored_digits": {"test.worst_group_acc": 0.99}}
    (forged / "manifest.json").write_text(json.dumps(manifest))
    assert submit(forged, smoke_dir) == 0
    entry = json.loads((smoke_dir / "entries" / "worst_group_smoke" / "plain_logreg--none.json").read_text())
    honest = bundle.read(boards.load_board("worst_group_smoke", smoke_dir), example_bundle)[0]
    assert entry["results"] == honest["results"]
    assert entry["results"]["colored_digits"]["metrics"]["test.worst_group_acc"]["mean"] < 0.99


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_archive_is_a_bundle_too(example_bundle, smoke_dir, tmp_path, kind):
    archive = tmp_path / f"bundle.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as out:
            for p in sorted(example_bundle.rglob("*")):
                if p.is_file():
                    out.write(p, p.relative_to(example_bundle).as_posix())
    else:
        with tarfile.open(archive, "w") as out:
            for p in sorted(example_bundle.rglob("*")):
                if p.is_file():
                    out.add(p, p.relative_to(example_bundle).as_posix())
    assert submit(archive, smoke_dir) == 0


def test_our_runs_exported_and_entered_give_the_sweeps_numbers(small_sweep, tmp_path):
    definition = yaml.safe_load((boards.BOARD_DIR / "worst_group_smoke.yaml").read_text())
    definition.update(required_seeds=2, name="wg")
    direct, via = tmp_path / "direct", tmp_path / "via"
    for folder in (direct, via):
        folder.mkdir()
        (folder / "wg.yaml").write_text(yaml.safe_dump(definition))
    assert main(["leaderboard", "submit", str(direct / "wg.yaml"), str(small_sweep), "--board-dir", str(direct)]) == 0
    shutil.copytree(direct / "references", via / "references")
    assert main(["leaderboard", "export", str(direct / "wg.yaml"), str(small_sweep), str(tmp_path / "bundles")]) == 0
    for path in sorted((tmp_path / "bundles").iterdir()):
        assert main(["leaderboard", "submit", str(via / "wg.yaml"), str(path), "--board-dir", str(via)]) == 0
    for path in sorted((direct / "entries" / "wg").glob("*.json")):
        a, b = json.loads(path.read_text()), json.loads((via / "entries" / "wg" / path.name).read_text())
        assert a["results"] == b["results"] and levels.level_of(b)[0] == "recomputed"


# --- malformed bundles ------------------------------------------------------------------------
def rehash(folder, name):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def set_manifest(change):
    def mutate(folder):
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return mutate


def set_key(path, value):
    def change(manifest):
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return set_manifest(change)


def delete_key(path):
    def change(manifest):
        node = manifest
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return set_manifest(change)


def first_file(folder, index=0):
    return sorted(json.loads((folder / "manifest.json").read_text())["files"])[index]


def set_array(key, make, index=0):
    def mutate(folder):
        name = first_file(folder, index)
        with np.load(folder / name) as loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        result = make(arrays[key].copy() if key in arrays else None, arrays)
        if result is None:
            del arrays[key]
        else:
            arrays[key] = result
        buffer = io.BytesIO()
        np.savez(buffer, **arrays) if not any(a.dtype == object for a in arrays.values()) else np.savez(
            buffer, allow_pickle=True, **arrays)
        (folder / name).write_bytes(buffer.getvalue())
        rehash(folder, name)
    return mutate


def write_file(name, data, listed=True):
    def mutate(folder):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        if listed:
            rehash(folder, name)
    return mutate


def manifest_bytes(data):
    def mutate(folder):
        (folder / "manifest.json").write_bytes(data)
    return mutate


def truncate(index):
    def mutate(folder):
        name = first_file(folder, index)
        (folder / name).write_bytes((folder / name).read_bytes()[:100])
        rehash(folder, name)
    return mutate


def symlink(folder):
    name = first_file(folder)
    target = folder / "elsewhere.npz"
    (folder / name).rename(target)
    (folder / name).symlink_to(target)


def drop_seed(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["runs"]["logreg-seed2"]
    for name in [n for n in manifest["files"] if "logreg-seed2" in n]:
        del manifest["files"][name]
        (folder / name).unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))


BAD_VALUES = [None, 1, "x", [], {}, True, -1.5]
MUTATIONS = {}
for key in bundle.REQUIRED:
    MUTATIONS[f"missing {key}"] = delete_key([key])
    for value in BAD_VALUES:
        if (key, value) not in (("format_version", 1), ("code_version", "x"), ("extra_data", [])):  # valid ones
            MUTATIONS[f"{key} = {value!r}"] = set_key([key], value)
MUTATIONS.update({
    "unknown key": set_key(["colour"], 1), "format 2": set_key(["format_version"], 2),
    "wrong board": set_key(["board"], "worst_group"), "stale dataset version": set_key(["datasets", "colored_digits"], "0" * 64),
    "extra dataset": set_key(["datasets", "waterbirds"], "0" * 64), "no dataset": set_key(["datasets"], {}),
    "entrant missing arm": delete_key(["entrant", "arm"]), "entrant extra": set_key(["entrant", "colour"], "red"),
    "entrant number": set_key(["entrant", "arm"], 3), "unknown group kind": set_key(["entrant", "groups"], "sometimes"),
    "empty algorithm": set_key(["entrant", "algorithm"], ""),
    "method both": set_key(["method"], {"config": {}, "description": "x"}), "method empty text": set_key(["method"], {"description": " "}),
    "extra_data numbers": set_key(["extra_data"], [1]), "code_version list of numbers": set_key(["code_version"], [1]),
    "manifest not json": manifest_bytes(b"{not json"), "manifest truncated": manifest_bytes(b'{"format_version": 1, "bo'),
    "manifest not utf8": manifest_bytes(b'{"board": "\xff\xfe"}'), "manifest a list": manifest_bytes(b"[1, 2]"),
    "manifest huge": manifest_bytes(b'{"x": "' + b"a" * (2 << 20) + b'"}'), "manifest empty": manifest_bytes(b""),
    "symlinked predictions": symlink, "required seeds unmet": drop_seed,
    "unlisted file": write_file("notes.txt", b"hello", listed=False),
    "file outside predictions": write_file("model.npz", b"x"),
})
for name in ["../manifest.json", "/etc/passwd", "predictions/colored_digits/logreg-seed0/../../x.npz",
             "predictions/colored_digits/../x.npz", "predictions/colored_digits/logreg-seed0/step_1.npy",
             "predictions/waterbirds/logreg-seed0/step_0000001.npz", "predictions/colored_digits/unknown/step_0000001.npz",
             "predictions/colored_digits/.hidden/step_0000001.npz", "predictions/colored_digits/logreg-seed0/step_-1.npz"]:
    MUTATIONS[f"listed {name}"] = set_key(["files", name], "0" * 64)
for bad in ["../x", "a/b", "", ".hidden", "x" * 100, "a b", "ü"]:
    MUTATIONS[f"run name {bad!r}"] = set_manifest(lambda m, bad=bad: m["runs"].update({bad: m["runs"]["logreg-seed0"]}))
for field, value in [("seed", "0"), ("seed", True), ("seed", 1.5), ("hparams_seed", None), ("hparams", []),
                     ("dataset", "waterbirds"), ("dataset", 1), ("colour", 1)]:
    MUTATIONS[f"run {field} = {value!r}"] = set_key(["runs", "logreg-seed0", field], value)
MUTATIONS["run without dataset"] = delete_key(["runs", "logreg-seed0", "dataset"])
MUTATIONS["wrong sha256"] = set_manifest(lambda m: m["files"].update({sorted(m["files"])[0]: "0" * 64}))
MUTATIONS["sha256 not text"] = set_manifest(lambda m: m["files"].update({sorted(m["files"])[0]: 5}))
MUTATIONS["file listed but missing"] = set_manifest(
    lambda m: m["files"].update({"predictions/colored_digits/logreg-seed0/step_0000099.npz": "0" * 64}))
ARRAY_CHANGES = {
    "nan preds": lambda a, _: np.full(a.shape, np.nan), "inf preds": lambda a, _: np.full(a.shape, np.inf),
    "float preds": lambda a, _: a.astype(np.float32), "bool preds": lambda a, _: a.astype(bool),
    "object preds": lambda a, _: a.astype(object), "2-d preds": lambda a, _: a[:, None],
    "class out of range": lambda a, _: a + 2, "negative class": lambda a, _: a - 1,
    "short preds": lambda a, _: a[:-1], "huge preds": lambda a, _: np.zeros(10 ** 6, np.int8), "missing": lambda a, _: None,
    "text preds": lambda a, _: a.astype(str),
}
ID_CHANGES = {
    "duplicate id": lambda a, _: np.concatenate([a[:-1], a[:1]]), "unknown id": lambda a, _: a + 10 ** 6,
    "missing ids": lambda a, _: a[:-1], "float ids": lambda a, _: a.astype(float), "missing": lambda a, _: None,
    "2-d ids": lambda a, _: a[None], "ids as text": lambda a, _: a.astype(str),
}
for index in (0, 4):
    for split in ("val", "test"):
        for what, change in ARRAY_CHANGES.items():
            if not (split == "val" and what in ("short preds",)):
                MUTATIONS[f"file {index} {split}.pred {what}"] = set_array(f"{split}.pred", change, index)
        for what, change in ID_CHANGES.items():
            if not (split == "val" and what == "missing ids"):  # a part of validation is allowed (DFR)
                MUTATIONS[f"file {index} {split}.ids {what}"] = set_array(f"{split}.ids", change, index)
        MUTATIONS[f"file {index} {split}.group below -1"] = set_array(
            f"{split}.group", lambda _, arrays, s=split: np.full(len(arrays[f"{s}.ids"]), -5), index)
    MUTATIONS[f"file {index} extra array"] = set_array("weights", lambda _, arrays: np.zeros(3), index)
    MUTATIONS[f"file {index} truncated"] = truncate(index)
    MUTATIONS[f"file {index} not npz"] = write_file("predictions/colored_digits/logreg-seed0/step_0000020.npz", b"PK\x03\x04 junk")


def test_the_fuzz_set_is_large():
    assert len(MUTATIONS) >= 200


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_malformed_bundle_is_refused_with_one_line_and_nothing_written(example_bundle, smoke_dir, tmp_path, capsys,
                                                                         name):
    bad = tmp_path / "bad"
    shutil.copytree(example_bundle, bad)
    MUTATIONS[name](bad)
    (smoke_dir / "entries" / "worst_group_smoke").mkdir(parents=True)
    before = snapshot(smoke_dir)
    capsys.readouterr()
    assert submit(bad, smoke_dir) == 2, name
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err, err
    assert snapshot(smoke_dir) == before


@pytest.mark.parametrize("kind", ["symlink", "dotdot"])
def test_an_archive_with_a_link_or_an_outside_name_is_refused(example_bundle, smoke_dir, tmp_path, kind):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as out:
        for p in sorted(example_bundle.rglob("*")):
            if p.is_file():
                out.add(p, p.relative_to(example_bundle).as_posix())
        info = tarfile.TarInfo("predictions/link.npz" if kind == "symlink" else "../evil.npz")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            out.addfile(info)
        else:
            info.size = 1
            out.addfile(info, io.BytesIO(b"x"))
    before = snapshot(smoke_dir)
    assert submit(archive, smoke_dir) == 2 and snapshot(smoke_dir) == before

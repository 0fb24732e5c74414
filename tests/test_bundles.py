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
    # the bundle carries the sweep's spec, so the entries account for their whole sweep
    assert main(["leaderboard", "verify", str(via / "wg.yaml"), "--board-dir", str(via)]) == 0


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


def rewrite_array(folder, name, key, make):
    """Replace array ``key`` of bundle file ``name`` by ``make(its copy or None, all arrays)`` (None
    deletes it) and list the file's new sha256 in the manifest."""
    with np.load(folder / name) as loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    result = make(arrays[key].copy() if key in arrays else None, arrays)
    if result is None:
        del arrays[key]
    else:
        arrays[key] = result
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=any(a.dtype == object for a in arrays.values()), **arrays)
    (folder / name).write_bytes(buffer.getvalue())
    rehash(folder, name)


def set_array(key, make, index=0):
    def mutate(folder):
        rewrite_array(folder, first_file(folder, index), key, make)
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


# --- malformed bundles of the transfer and disentanglement boards -------------------------------
FAMILIES = {"disentanglement": ("vae_sweep", {"required_seeds": 2}),
            "transfer": ("probe_sweep", {"datasets": ["digits", "digits_colour", "digits_label"]})}


@pytest.fixture(scope="module")
def family_bundles(request, tmp_path_factory):
    """Per board: its definition (for the tiny sweeps), its published references and one bundle
    exported from our runs (transfer: the trained network's block2 entrant)."""
    out = {}
    for name, (sweep_fixture, changes) in FAMILIES.items():
        root = tmp_path_factory.mktemp(name)
        definition = {**yaml.safe_load((boards.BOARD_DIR / f"{name}.yaml").read_text()), **changes}
        (root / f"{name}.yaml").write_text(yaml.safe_dump(definition))
        sweep_dir = request.getfixturevalue(sweep_fixture)
        assert main(["leaderboard", "export", str(root / f"{name}.yaml"), str(sweep_dir), str(root / "bundles")]) == 0
        board = boards.load_board(str(root / f"{name}.yaml"), root)
        from harness.leaderboards import shipped
        shipped.publish_references(board, sweep_dir)
        chosen = "erm--trained--block2" if name == "transfer" else "beta_vae--posX-posY"
        out[name] = (root, root / "bundles" / chosen)
    return out


def file_with(folder, key):
    """The first predictions file (sorted) of the bundle holding array ``key``."""
    for name in sorted(json.loads((folder / "manifest.json").read_text())["files"]):
        with np.load(folder / name) as loaded:
            if key in loaded.files:
                return name
    raise AssertionError(f"no file holds {key}")


def change_array(key, make, holder=None):
    """Change array ``key`` of the first file holding ``holder`` (default: ``key``); None deletes it."""
    def mutate(folder):
        rewrite_array(folder, file_with(folder, holder or key), key, make)
    return mutate


def rename_file(new_stem):
    def mutate(folder):
        manifest = json.loads((folder / "manifest.json").read_text())
        name = sorted(manifest["files"])[0]
        target = name.rsplit("/", 1)[0] + f"/{new_stem}.npz"
        (folder / name).rename(folder / target)
        manifest["files"][target] = manifest["files"].pop(name)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return mutate


COMMON = {
    "nan": lambda a, _: np.full(a.shape, np.nan), "inf": lambda a, _: np.full(a.shape, -np.inf),
    "object": lambda a, _: a.astype(object), "text": lambda a, _: a.astype(str), "bool": lambda a, _: a.astype(bool),
    "short": lambda a, _: a[:-1], "empty": lambda a, _: a[:0], "missing": lambda a, _: None,
    "huge": lambda a, _: np.zeros((10 ** 6,) + a.shape[1:], a.dtype),
}
FAMILY_MUTATIONS = {}
for what, change in COMMON.items():
    for key in ("test.mu", "train.mu", "shift.mu", "val.rec", "val.kl"):
        FAMILY_MUTATIONS[f"disentanglement {key} {what}"] = change_array(key, change)
    for key in ("val.probe_by_c", "test.probe", "test.knn", "train.spectrum", "cs"):
        if not (what in ("short", "huge") and key in ("train.spectrum", "cs")):  # a spectrum has no length to keep
            FAMILY_MUTATIONS[f"transfer {key} {what}"] = change_array(key, change)
FAMILY_MUTATIONS.update({
    "disentanglement wrong code width": change_array("test.mu", lambda a, _: a[:, :-1]),
    "disentanglement codes 1-d": change_array("test.mu", lambda a, _: a[:, 0]),
    "disentanglement codes 3-d": change_array("test.mu", lambda a, _: a[:, :, None]),
    "disentanglement integer codes": change_array("test.mu", lambda a, _: a.astype(np.int32)),
    "disentanglement 2000 latents": change_array("test.mu", lambda a, _: np.zeros((len(a), 2000), np.float32)),
    "disentanglement 2-d loss terms": change_array("val.rec", lambda a, _: a[:, None]),
    "disentanglement integer loss terms": change_array("val.kl", lambda a, _: a.astype(np.int64)),
    "disentanglement codes without ids": change_array("test.ids", lambda a, _: None),
    "disentanglement duplicate test id": change_array("test.ids", lambda a, _: np.concatenate([a[:-1], a[:1]])),
    "disentanglement incomplete test": change_array("test.ids", lambda a, _: a[:-1],),
    "disentanglement float ids": change_array("val.ids", lambda a, _: a.astype(float)),
    "disentanglement unknown array": change_array("val.factors", lambda a, arrays: np.zeros((len(arrays["val.ids"]), 5), np.int64), "val.rec"),
    "disentanglement transfer's name": rename_file("1_block1"),
    "transfer float labels": change_array("test.probe", lambda a, _: a.astype(np.float32)),
    "transfer float per-C labels": change_array("val.probe_by_c", lambda a, _: a.astype(np.float64) + 0.5),
    "transfer negative class": change_array("test.knn", lambda a, _: a - 100),
    "transfer per-C labels 1-d": change_array("val.probe_by_c", lambda a, _: a[0]),
    "transfer per-C labels short": change_array("val.probe_by_c", lambda a, _: a[:, :-1]),
    "transfer spectrum 2-d": change_array("train.spectrum", lambda a, _: a[:, None]),
    "transfer negative spectrum": change_array("train.spectrum", lambda a, _: -a - 1),
    "transfer integer spectrum": change_array("train.spectrum", lambda a, _: a.astype(np.int64)),
    "transfer zero C": change_array("cs", lambda a, _: a * 0),
    "transfer incomplete test": change_array("test.ids", lambda a, _: a[1:]),
    "transfer train spectrum without ids": change_array("train.ids", lambda a, _: None),
    "transfer unknown test id": change_array("test.ids", lambda a, _: a + 10 ** 6),
    "transfer worst-group's name": rename_file("step_0000001"),
    "transfer another entrant's layer": rename_file("0_block1"),
    "transfer no layer": rename_file("2_"),
})


def test_the_family_fuzz_set_covers_both_families():
    assert sum(n.startswith("transfer") for n in FAMILY_MUTATIONS) >= 40
    assert sum(n.startswith("disentanglement") for n in FAMILY_MUTATIONS) >= 40


@pytest.mark.parametrize("name", sorted(FAMILY_MUTATIONS))
def test_a_malformed_transfer_or_disentanglement_bundle_is_refused(family_bundles, tmp_path, capsys, name):
    board_name = name.split()[0]
    root, good = family_bundles[board_name]
    folder = tmp_path / "board"
    shutil.copytree(root / "references", folder / "references")
    (folder / "entries" / board_name).mkdir(parents=True)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    FAMILY_MUTATIONS[name](bad)
    before = snapshot(folder)
    capsys.readouterr()
    assert main(["leaderboard", "submit", str(root / f"{board_name}.yaml"), str(bad), "--board-dir", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err, err
    assert snapshot(folder) == before


@pytest.mark.parametrize("board_name", sorted(FAMILIES))
def test_the_unchanged_family_bundle_is_entered(family_bundles, tmp_path, board_name):
    root, good = family_bundles[board_name]
    folder = tmp_path / "board"
    shutil.copytree(root / "references", folder / "references")
    assert main(["leaderboard", "submit", str(root / f"{board_name}.yaml"), str(good), "--board-dir", str(folder)]) == 0

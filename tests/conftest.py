"""Shared fixtures: tiny configs, a fresh run folder per test, and one small finished sweep."""
from __future__ import annotations

import gzip
import os
import struct

# One torch thread: on a small shared machine more threads only fight over the cores. Set before
# torch is imported; subprocesses (workers, SLURM jobs) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs the same generated cases every time (a red CI is then a regression, not a new draw);
# elsewhere hypothesis explores new ones on each run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

from harness.core import config  # noqa: E402
from harness.leaderboards import board as boards  # noqa: E402

TINY = {"steps": 40, "eval_every": 10, "backbone.options.width": 64}


@pytest.fixture
def tiny_cfg(tmp_path):
    """A resolved config for a short colored_digits run in its own folder."""

    def make(*overrides: str) -> dict:
        return config.load(None, [f"output_dir={tmp_path / 'runs'}", "steps=60", "eval_every=20",
                                  "backbone.options.width=64", *overrides])

    return make


def tiny_spec(**changes) -> dict:
    """A sweep spec of short colored_digits runs: ERM and GroupDRO, 2 draws, 2 seeds."""
    spec = {"name": "tiny", "datasets": ["colored_digits"], "algorithms": ["erm", "group_dro"],
            "groups": ["annotated"], "hparam_draws": 2, "seeds": 2, "overrides": dict(TINY), "launcher": "local"}
    spec.update(changes)
    return spec


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory):
    """A finished sweep folder of tiny_spec() (8 runs), shared read-only by the tests that read one."""
    from harness.sweeps import sweep
    from harness.sweeps.launchers import Local

    folder = tmp_path_factory.mktemp("sweep") / "tiny"
    report = sweep.run_sweep(sweep.parse_spec(tiny_spec()), folder, Local())
    assert report.ok and report.ran == 8
    return folder


PROBE_TASKS = ["digits", "digits_colour", "digits_label"]


@pytest.fixture(scope="session")
def probe_sweep(tmp_path_factory):
    """A finished sweep of probe trials (shared read-only): a trained and an untrained CNN, 2
    seeds, probed at every layer on colored_digits' tasks (4 probe runs, 2 pretraining runs)."""
    from harness.sweeps import sweep
    from harness.sweeps.launchers import Local

    spec = sweep.parse_spec({
        "name": "transfer", "datasets": ["colored_digits"], "kind": "probe", "seeds": 2,
        "algorithms": ["erm", {"name": "erm", "overrides": {"probe.init": "random"}}],
        "overrides": {"steps": 20, "eval_every": 20, "backbone.name": "cnn", "backbone.options.channels": [4, 8, 8],
                      "probe.tasks": PROBE_TASKS, "probe.cs": [0.1, 1.0], "probe.knn_k": 5}})
    folder = tmp_path_factory.mktemp("sweeps") / "transfer"
    report = sweep.run_sweep(spec, folder, Local())
    assert report.ok and report.ran == 4 + 2, report
    return folder


@pytest.fixture(scope="session")
def vae_sweep(tmp_path_factory):
    """A finished sweep of tiny beta-VAEs on procedural dSprites (shared read-only): 2 hparam
    draws x 2 seeds, 3 evaluations each."""
    from harness.sweeps import sweep
    from harness.sweeps.launchers import Local

    spec = sweep.parse_spec({
        "name": "vae", "datasets": [{"name": "procedural_dsprites", "options": {
            "n_train": 24, "n_val": 8, "n_test": 24, "n_shift": 8, "correlated": "posX:posY"}}],
        "algorithms": ["beta_vae"], "groups": ["none"], "hparam_draws": 2, "seeds": 2, "launcher": "local",
        "overrides": {"steps": 3, "eval_every": 1, "algorithm.hparams.batch_size": 8}})
    folder = tmp_path_factory.mktemp("sweeps") / "vae"
    report = sweep.run_sweep(spec, folder, Local())
    assert report.ok and report.ran == 4, report
    return folder


def write_idx(path, array):
    """An IDX file (big-endian header) gzipped, as Fashion-MNIST ships."""
    header = struct.pack(">I", (0x08 << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """Debian's layout (four gzipped IDX files in one folder), 300 + 100 images."""
    rng = np.random.RandomState(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, n in (("train", 300), ("t10k", 100)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.randint(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.randint(0, 10, n))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return folder


def install_entry_point(folder, name: str, module: str) -> None:
    """A dist-info folder in ``folder`` declaring ``name = module`` in the ``shift_harness``
    entry-point group, as an installed third-party package would (put ``folder`` on sys.path)."""
    dist = folder / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[shift_harness]\n{name} = {module}\n")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT with random weights, saved where from_pretrained finds it offline."""
    import torch
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16)
    folder = tmp_path_factory.mktemp("tiny_bert")
    transformers.BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture
def board_dir(tmp_path):
    """The quickstart's colored_digits board (named worst_group here), asking for the 2 seeds of the small sweep."""
    definition = yaml.safe_load((boards.BOARD_DIR / "worst_group_smoke.yaml").read_text())
    definition["required_seeds"], definition["name"] = 2, "worst_group"
    folder = tmp_path / "boards"
    folder.mkdir()
    (folder / "worst_group.yaml").write_text(yaml.safe_dump(definition))
    return folder

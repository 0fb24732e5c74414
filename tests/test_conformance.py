"""Conformance: every registered plugin honours its registry's contract (scikit-learn's
``check_estimator`` is the model). The parameters are read from the registries at collection
time, so a new algorithm, dataset, backbone, protocol, launcher or trial kind is checked without
a new test; one that cannot be checked here must be listed below with the reason, or the
``*_is_checked_or_listed`` tests fail.

Kept fast (the whole file is meant to run in well under a minute on 2 cores): each protocol's small
dataset (`Protocol.small_dataset`; colored_digits with
an MLP of width 16, runs of 6 steps.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.core.files import load_arrays, load_torch, read_jsonl, save_torch
from harness.core.registry import (
    ALGORITHMS,
    BACKBONES,
    DATASETS,
    LAUNCHERS,
    PROTOCOLS,
    REGISTRIES,
    SECTIONS,
    TASKS,
    TRIAL_KINDS,
    draw_hparams,
)
from harness.data.dataset import UNLABELLED, batch_indices
from harness.models.algorithm import Discoverer
from harness.models.backbones import OUTPUT, backbone_factory
from harness.models.masking import MaskedPretrainer
from harness.protocols.base import protocol as get_protocol
from harness.runs.run import build_algorithm, build_dataset, protocol_of, train

CPU = torch.device("cpu")
STEPS, CUT = 6, 3  # runs of STEPS steps, evaluated every CUT; the resume check interrupts at step CUT
ALL_REGISTRIES = {**REGISTRIES, SECTIONS.kind: SECTIONS}


def entries(registry):
    return [pytest.param(e.name, id=e.name) for e in registry.entries()]


# --- every registry: what `harness list` shows -------------------------------------------------------

@pytest.mark.parametrize("kind, name", [pytest.param(k, e.name, id=f"{k}:{e.name}")
                                        for k, r in ALL_REGISTRIES.items() for e in r.entries()])
def test_every_entry_has_a_complete_one_line_description(kind, name):
    text = ALL_REGISTRIES[kind].get(name).description
    assert text.strip() and "\n" not in text, (kind, name, text)
    # the first docstring line of a summary that runs on is shown cut mid-sentence by `harness list`
    assert text.rstrip().endswith((".", "!", "?")), f"{kind} {name}: description cut short: {text!r}"
    for left, right in ("()", "[]", "{}"):
        assert text.count(left) == text.count(right), f"{kind} {name}: unbalanced {left}{right} in {text!r}"
    assert text.count("``") % 2 == 0, f"{kind} {name}: unbalanced ``code`` in {text!r}"


# --- algorithms ---------------------------------------------------------------------------------------

def fitted(name: str) -> list[str]:
    """Overrides that make the algorithm's hparams fit a run of STEPS steps, chosen generically:
    every integer hparam named ``*_steps`` / ``*_step`` whose default would not fit (JTT's
    id_steps, CRT's erm_steps, IRM/V-REx's anneal_steps; LDAM's drw_step=-1, "never", is left
    alone) is set to 2, below the interruption at step CUT, so that a second stage's state (the
    error set, the re-initialised head and its optimizer, the annealed penalty's restarted
    optimizer) must survive the checkpoint."""
    return [f"algorithm.hparams.{key}=2" for key, hp in ALGORITHMS.get(name).hparams.items()
            if key.endswith(("_steps", "_step")) and type(hp.default) is int and hp.default >= STEPS]


def small_dataset(name: str) -> list[str]:
    """Overrides selecting the small dataset the algorithm's protocol declares (colored_digits for
    worst-group; 64x64 sprites for the disentanglement VAEs)."""
    dataset, options = get_protocol(ALGORITHMS.get(name).obj.protocol).small_dataset
    return [f"dataset.name={dataset}", *(f"dataset.options.{k}={v}" for k, v in options.items())]


# what masked image modeling methods (a MaskedPretrainer) train: a tiny ViT, 4x4 patches of 2x2 pixels
TINY_VIT = ["backbone.name=vit", "backbone.options.width=16", "backbone.options.depth=1", "backbone.options.heads=2"]


def run_cfg(tmp_path, name: str, *extra: str) -> dict:
    """A resolved config: the protocol's small dataset (colored_digits with an MLP of width 16 for
    worst-group; a tiny ViT for methods that mask patch tokens), STEPS steps, annotated groups
    (what algorithms that need groups train on; the others ignore them)."""
    dataset = small_dataset(name)
    narrow = ["backbone.options.width=16"] if dataset[0] == "dataset.name=colored_digits" else []  # its MLP
    if issubclass(ALGORITHMS.get(name).obj, MaskedPretrainer):
        narrow = TINY_VIT
    return configs.load(None, [f"output_dir={tmp_path / 'runs'}", f"algorithm.name={name}", f"steps={STEPS}",
                               f"eval_every={CUT}", *narrow, "groups=annotated", "device=cpu", *dataset,
                               *fitted(name), *extra])


@pytest.mark.parametrize("name", entries(ALGORITHMS))
def test_hparam_draws_resolve_through_the_config_and_fit_their_space(name):
    space = ALGORITHMS.get(name).hparams
    assert {"lr", "batch_size"} <= set(space), "the run loop reads lr and batch_size"
    for draw in range(4):
        cfg = configs.load(None, [f"algorithm.name={name}", f"algorithm.hparams_seed={draw}"])
        values = cfg["algorithm"]["hparams"]
        assert set(values) == set(space)
        assert values == draw_hparams(space, draw), "the config resolves to the registry's draw"
        if draw == 0:
            assert values == {k: hp.default for k, hp in space.items()}, "draw 0 is the defaults"
        for key, hp in space.items():
            value, default = values[key], hp.default
            # same type as the default (ints stay ints: a step count drawn as 250.0 breaks range())
            assert type(value) is type(default), (key, value, default)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                assert math.isfinite(value), (key, value)
                if key in ("lr", "batch_size"):
                    assert value > 0, (key, value)
        # repeatable: the same draw seed gives the same values (the config above drew them once)
        assert draw_hparams(space, draw) == values
        # a drawn value written back as an explicit override is accepted by the config's type
        # checks and comes back unchanged
        scalars = {k: v for k, v in values.items() if not isinstance(v, (tuple, list))}
        again = configs.load(None, [f"algorithm.name={name}",
                                    *(f"algorithm.hparams.{k}={v}" for k, v in scalars.items())])
        assert {k: again["algorithm"]["hparams"][k] for k in scalars} == scalars


_small: dict[str, object] = {}


def small_dataset_of(name: str):
    """The small dataset of the algorithm's protocol, built once per module for the in-process checks."""
    overrides = small_dataset(name)
    key = " ".join(overrides)
    if key not in _small:
        _small[key] = build_dataset(configs.load(None, overrides))
    return _small[key]


def build(cfg, dataset):
    """What the run loop builds before its first step: protocol state, algorithm, sampling."""
    protocol = protocol_of(cfg)
    state = protocol.prepare(cfg, dataset, CPU)
    algo = build_algorithm(cfg, dataset, protocol, state)
    positions, weights = protocol.sampling(algo, dataset, state)
    return protocol, state, algo, positions, weights


def batch_at(cfg, dataset, protocol, state, positions, weights, step):
    train_split = dataset.splits["train"]
    positions = torch.arange(len(train_split)) if positions is None else positions
    pos = positions[batch_indices(len(positions), cfg["algorithm"]["hparams"]["batch_size"], step, cfg["seed"],
                                  weights)]
    return protocol.batch(train_split, pos, state)


def seeded_update(algo, batch, step):
    """An update from a fixed RNG state, so two instances in the same state take the same step."""
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    return algo.update(batch, step)


def records(protocol, algo, dataset, state):
    algo.eval()
    arrays = {f"{s}.{k}": v for s in protocol.splits
              for k, v in protocol.record(algo, s, dataset.splits[s], state, 512).items()}
    algo.train()
    return arrays


@pytest.mark.parametrize("name", entries(ALGORITHMS))
def test_algorithm_updates_records_scores_and_round_trips_its_checkpoint(name, tmp_path):
    cfg = run_cfg(tmp_path, name)
    data = small_dataset_of(name)
    protocol, state, algo, positions, weights = build(cfg, data)
    algo.train()
    before = {k: v.detach().clone() for k, v in algo.named_parameters()}
    assert before, "an algorithm trains parameters"
    logs = algo.update(batch_at(cfg, data, protocol, state, positions, weights, 0), 0)
    assert logs, "update returns its training logs"
    for key, value in logs.items():
        value = torch.as_tensor(value)
        assert value.numel() == 1 and torch.isfinite(value).all(), (key, value)
    assert any(not torch.equal(before[k], v) for k, v in algo.named_parameters()), "one update changes nothing"

    arrays = records(protocol, algo, data, state)
    scores = protocol.scores(arrays, protocol.info(cfg, data, state))
    for column in protocol.reported:
        split, metric = column.split(".", 1)
        assert math.isfinite(scores[split][metric]), (column, scores[split].get(metric))
    for split, metrics in scores.items():
        for metric in protocol.metrics:
            if metric in metrics:
                assert math.isfinite(metrics[metric]), (split, metric, metrics[metric])
    if isinstance(algo, Discoverer):
        environments = discovered(algo, data)
        assert set(environments.unique().tolist()) <= {0, 1}
        assert all(math.isfinite(v) for v in algo.discovery_stats().values())

    # through the file the run loop writes (weights_only load), into an instance built from
    # another seed, after the loop's sampling call, as a resume does
    save_torch(tmp_path / "checkpoint.pt", {"algorithm": algo.checkpoint_state()})
    fresh_cfg = {**cfg, "seed": cfg["seed"] + 1}
    _, _, fresh, _, _ = build(fresh_cfg, data)
    fresh.train()
    assert not all(np.array_equal(v, records(protocol, fresh, data, state)[k]) for k, v in arrays.items()), \
        "another seed builds the same model: the round trip below would prove nothing"
    fresh.load_checkpoint_state(load_torch(tmp_path / "checkpoint.pt")["algorithm"])
    assert_same_arrays(records(protocol, fresh, data, state), arrays)
    if isinstance(algo, Discoverer):
        assert torch.equal(discovered(fresh, data), environments)
    # and the next step (optimizer state, per-example state, stage) is the same in both
    batch = batch_at(cfg, data, protocol, state, positions, weights, 1)
    logs, fresh_logs = seeded_update(algo, batch, 1), seeded_update(fresh, batch, 1)
    assert {k: float(v) for k, v in fresh_logs.items()} == {k: float(v) for k, v in logs.items()}
    # every parameter and buffer, not only what predict reads (JTT's identification model)
    want = algo.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in fresh.state_dict().items()), "the next step differs"
    assert_same_arrays(records(protocol, fresh, data, state), records(protocol, algo, data, state))


@torch.no_grad()
def discovered(algo, dataset):
    split = dataset.splits["val"]
    algo.eval()
    out = algo.environments(split.inputs(torch.arange(len(split))), split.y)
    algo.train()
    assert out.shape == (len(split),), "one environment per example"
    return out


def assert_same_arrays(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        assert np.array_equal(got[key], want[key]), key


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name", entries(ALGORITHMS))
def test_a_run_interrupted_and_resumed_equals_an_uninterrupted_one(name, tmp_path, monkeypatch):
    """The approach of tests/test_run.py, at its cheapest: an update that raises at step CUT
    stands for a kill just after the checkpoint of step CUT."""
    whole = train(run_cfg(tmp_path, name, f"run_dir={tmp_path / 'whole'}"), progress=False)
    cls = ALGORITHMS.get(name).obj
    original = cls.update

    def dies_at_the_cut(self, batch, step):
        if step == CUT:
            raise Interrupted
        return original(self, batch, step)

    cfg = run_cfg(tmp_path, name, f"run_dir={tmp_path / 'cut'}")
    with monkeypatch.context() as m:
        m.setattr(cls, "update", dies_at_the_cut)
        with pytest.raises(Interrupted):
            train(cfg, progress=False)
    cut = tmp_path / "cut"
    assert [r["step"] for r in read_jsonl(cut / "results.jsonl")] == [CUT] and not (cut / "done").exists()
    train(cfg, progress=False)
    assert [(r["step"], r["train_logs"], r["metrics"]) for r in read_jsonl(cut / "results.jsonl")] == \
        [(r["step"], r["train_logs"], r["metrics"]) for r in read_jsonl(whole / "results.jsonl")]
    for step in (CUT, STEPS):
        file = f"predictions/step_{step:07d}.npz"
        assert_same_arrays(load_arrays(cut / file), load_arrays(whole / file))


# --- datasets -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wilds_root(tmp_path_factory):
    """Tiny WILDS folders in their on-disk layouts (tests/wilds_fixtures.py) and a local
    tokenizer folder for CivilComments (a 9-token BERT vocabulary)."""
    import wilds_fixtures

    root = tmp_path_factory.mktemp("wilds")
    for make in (wilds_fixtures.make_waterbirds, wilds_fixtures.make_celeba, wilds_fixtures.make_civilcomments,
                 wilds_fixtures.make_camelyon17):
        make(root)
    return root


@pytest.fixture(scope="module")
def local_tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "awful", "nice",
                                                 "the", "a"]) + "\n")
    transformers.BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def _fashion(name):
    return lambda request: DATASETS.get(name).obj(root=str(request.getfixturevalue("tiny_fashion")), n_train=120,
                                                  n_val=60, n_test=60)


def _wilds(name, **options):
    return lambda request: DATASETS.get(name).obj(root=str(request.getfixturevalue("wilds_root")), image_size=8,
                                                  **options)


@pytest.fixture(scope="module")
def dsprites_root(tmp_path_factory):
    """A tiny dSprites archive in the real format (tests/dsprites_fixtures.py)."""
    import dsprites_fixtures

    root = tmp_path_factory.mktemp("dsprites")
    dsprites_fixtures.write_archive(root, dsprites_fixtures.random_rows(60))
    return root


TINY_SPRITES = {"n_train": 24, "n_val": 12, "n_test": 12, "n_shift": 12}

# dataset -> how to build it here, offline and small
DATASET_BUILDERS = {
    "colored_digits": lambda request: DATASETS.get("colored_digits").obj(),
    "colored_fashion_mnist": _fashion("colored_fashion_mnist"),  # from tiny_fashion (tests/conftest.py)
    "background_fashion_mnist": _fashion("background_fashion_mnist"),
    "fashion_mnist": lambda request: DATASETS.get("fashion_mnist").obj(
        root=str(request.getfixturevalue("tiny_fashion")), n_train=120, n_val=60, n_test=60, labelled=30),
    "waterbirds": _wilds("waterbirds"),  # from tests/wilds_fixtures.py
    "celeba": _wilds("celeba"),
    "camelyon17": _wilds("camelyon17"),
    "civilcomments": lambda request: DATASETS.get("civilcomments").obj(
        root=str(request.getfixturevalue("wilds_root")), max_length=6,
        tokenizer=str(request.getfixturevalue("local_tokenizer"))),
    "procedural_dsprites": lambda request: DATASETS.get("procedural_dsprites").obj(correlated="shape:scale",
                                                                                  **TINY_SPRITES),
    "dsprites": lambda request: DATASETS.get("dsprites").obj(root=str(request.getfixturevalue("dsprites_root")),
                                                             **TINY_SPRITES),
}
# dataset -> why it cannot be built here (none at present)
DATASETS_NOT_BUILT: dict[str, str] = {}


def test_every_dataset_is_checked_or_listed_with_a_reason():
    assert not set(DATASET_BUILDERS) & set(DATASETS_NOT_BUILT)
    missing = set(DATASETS.names()) - set(DATASET_BUILDERS) - set(DATASETS_NOT_BUILT)
    assert not missing, f"datasets neither built by a conformance check nor listed with a reason: {sorted(missing)}"


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in DATASETS.names() if n in DATASET_BUILDERS])
def test_dataset_builds_with_unique_stable_ids_one_label_and_groups_in_range(name, request):
    first, second = DATASET_BUILDERS[name](request), DATASET_BUILDERS[name](request)
    assert {"train", "val", "test"} <= set(first.splits)
    columns = first.metadata_info()["columns"]
    assert [c["role"] for c in columns].count("label") == 1, columns
    assert first.num_classes >= 2
    entry, _ = BACKBONES.family(first.default_backbone)  # raises when it is not registered
    assert entry.name == first.default_backbone.partition(":")[0]
    for split_name, split in first.splits.items():
        ids = split.ids.numpy()
        assert len(ids) > 0, split_name
        assert len(np.unique(ids)) == len(ids), f"{split_name}: repeated ids"
        assert np.array_equal(ids, second.splits[split_name].ids.numpy()), f"{split_name}: ids differ between builds"
        assert torch.equal(split.metadata, second.splits[split_name].metadata), split_name
        y = split.y
        unlabelled = y == UNLABELLED  # pretraining data's training split only
        assert not unlabelled.any() or split_name == "train", split_name
        assert ((y >= 0) & (y < first.num_classes) | unlabelled).all(), split_name
        groups = first.annotated_groups(split_name)
        if first.annotated:
            assert ((groups >= 0) & (groups < first.num_groups)).all(), split_name
        else:
            assert (groups == -1).all(), split_name
        x = split.inputs(torch.arange(min(2, len(split))))
        assert tuple(x.shape[1:]) == tuple(first.input_shape), split_name
    if first.annotated:
        assert len(first.group_names()) == first.num_groups


# --- backbones ----------------------------------------------------------------------------------------

# registered backbone -> (name as configs write it, input shape, options)
BACKBONE_CASES = {
    "identity": lambda request: ("identity", (5,), {}),
    "mlp": lambda request: ("mlp", (2, 4, 4), {"width": 8, "depth": 3}),
    "cnn": lambda request: ("cnn", (3, 8, 8), {"channels": (4, 6, 8)}),
    "domainbed_mnist_cnn": lambda request: ("domainbed_mnist_cnn", (2, 14, 14), {}),
    "timm": lambda request: ("timm:resnet18", (3, 32, 32), {}),
    "vit": lambda request: ("vit", (2, 8, 8), {"patch_size": 2, "width": 8, "depth": 2, "heads": 2, "class_token": True}),
    "text": lambda request: ("text:50", (2, 7), {"embed_dim": 6, "width": 5, "depth": 2}),
    "hf": lambda request: (f"hf:{request.getfixturevalue('tiny_bert')}", (2, 7), {}),
}


def test_every_backbone_is_checked():
    missing = set(BACKBONES.names()) - set(BACKBONE_CASES)
    assert not missing, f"backbones without a conformance case: {sorted(missing)}"


def backbone_inputs(shape, n=3):
    """Images, or token ids with attention masks of random lengths (what text and hf read)."""
    gen = torch.Generator().manual_seed(0)
    if len(shape) == 2 and shape[0] == 2:
        ids = torch.randint(1, 50, (n, shape[1]), generator=gen)
        mask = (torch.arange(shape[1]) < torch.randint(1, shape[1] + 1, (n, 1), generator=gen)).long()
        return torch.stack([ids * mask, mask], 1)
    return torch.randn(n, *shape, generator=gen)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in BACKBONES.names() if n in BACKBONE_CASES])
def test_backbone_forward_and_one_pass_intermediates_match_its_layers(name, request):
    spec, shape, options = BACKBONE_CASES[name](request)
    net = backbone_factory(spec, shape, options)().eval()
    x = backbone_inputs(shape)
    leaf = next(m for m in net.modules() if not list(m.children()))
    passes: list = []
    leaf.register_forward_hook(lambda *args: passes.append(1))
    with torch.no_grad():
        out = net(x)
        assert out.shape == (3, net.n_outputs)
        names = net.layer_names
        assert names and names[-1] == OUTPUT and len(set(names)) == len(names)
        assert list(net.layer_dims) == names and net.layer_dims[OUTPUT] == net.n_outputs
        passes.clear()
        features = net.intermediates(x, names)
    assert len(passes) == 1, "intermediates of every layer come from one forward pass"
    assert {k: tuple(v.shape) for k, v in features.items()} == {k: (3, d) for k, d in net.layer_dims.items()}
    assert torch.allclose(features[OUTPUT], out, atol=1e-5)


# --- protocols ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", entries(PROTOCOLS))
def test_protocol_rules_reported_columns_and_labels_are_its_own(name):
    protocol = get_protocol(name)
    assert protocol.rules, "a protocol needs a selection rule"
    assert len({r.name for r in protocol.rules}) == len(protocol.rules), "rule names must be unique"
    for rule in protocol.rules:
        assert rule.metric in protocol.metrics, f"rule {rule.name} selects on {rule.metric}, not one of its metrics"
        assert rule.split in protocol.splits, rule
    columns = protocol.metric_columns()
    assert set(protocol.reported) <= set(columns), set(protocol.reported) - set(columns)
    assert set(protocol.progress) <= set(columns), set(protocol.progress) - set(columns)
    for metric, display in protocol.metrics.items():
        assert display.label.strip(), metric
        assert display.format(0.5)


@pytest.mark.parametrize("name", entries(PROTOCOLS))
def test_protocol_implements_the_contract_its_trains_flag_asks(name):
    cls = PROTOCOLS.get(name).obj
    assert cls.missing() == [], f"protocol {name} leaves required methods to the base class: {cls.missing()}"
    written_for = [a.name for a in ALGORITHMS.entries() if getattr(a.obj, "protocol", None) == name]
    if not cls.trains:  # its runs are written by another trial kind: no algorithm trains through the loop for it
        assert written_for == [], f"algorithms {written_for} are written for {name}, which the loop does not train"


# --- launchers ----------------------------------------------------------------------------------------

# launcher -> options for a 1-trial sweep run here
LAUNCHERS_RUN = {"local": {}, "processes": {"workers": 1}}
# launcher -> why it is not run here
LAUNCHERS_NOT_RUN = {"slurm": "needs a SLURM cluster; tests/test_slurm.py runs it against one (CI starts it)"}


def test_every_launcher_is_run_or_listed_with_a_reason():
    missing = set(LAUNCHERS.names()) - set(LAUNCHERS_RUN) - set(LAUNCHERS_NOT_RUN)
    assert not missing, f"launchers neither run by a conformance check nor listed with a reason: {sorted(missing)}"


@pytest.mark.parametrize("name", entries(LAUNCHERS))
def test_launcher_accepts_its_defaults_and_refuses_unknown_options_naming_the_accepted(name, tmp_path):
    from harness.sweeps.launchers import make_launcher, parse_launcher

    declared = LAUNCHERS.get(name).options
    choice = parse_launcher({"name": name})
    assert choice.options == {k: o.default for k, o in declared.items()}
    for key, option in declared.items():
        assert option.help.strip(), f"option {key} has no help for `harness list launchers`"
    with pytest.raises(HarnessError, match="no_such_option") as refused:
        parse_launcher({"name": name, "no_such_option": 1})
    accepted = str(refused.value).split("accepted:", 1)[1]
    assert all(key in accepted for key in declared), str(refused.value)
    if name in LAUNCHERS_RUN:
        assert make_launcher(choice, tmp_path) is not None


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in LAUNCHERS.names() if n in LAUNCHERS_RUN])
def test_launcher_runs_a_one_trial_sweep(name, tmp_path):
    from harness.sweeps import sweep
    from harness.sweeps.launchers import make_launcher

    spec = sweep.parse_spec({"name": "one", "datasets": ["colored_digits"], "algorithms": ["erm"],
                             "groups": ["annotated"], "hparam_draws": 1, "seeds": 1,
                             "overrides": {"steps": 2, "eval_every": 2, "backbone.options.width": 8},
                             "launcher": {"name": name, **LAUNCHERS_RUN[name]}})
    folder = tmp_path / "one"
    report = sweep.run_sweep(spec, folder, make_launcher(spec.launcher, folder))
    assert report.ok and report.ran == 1, report
    trials = [p for p in folder.iterdir() if (p / "config.yaml").exists()]
    assert len(trials) == 1
    assert all((trials[0] / f).exists() for f in TRIAL_KINDS.get("train").obj.done_files)


# --- trial kinds --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", entries(TRIAL_KINDS))
def test_trial_kind_declares_its_done_files(name):
    kind = TRIAL_KINDS.get(name).obj
    assert callable(kind.run)
    assert kind.done_files, "a kind without done files would be done before it ran"
    for file in kind.done_files:
        assert isinstance(file, str) and file.strip() and not file.startswith("/"), file



# --- downstream tasks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", entries(TASKS))
def test_task_names_a_label_column_of_its_dataset(name, request):
    task = TASKS.get(name).obj
    assert task.dataset in DATASET_BUILDERS, f"task {name}: dataset {task.dataset} is not built here"
    dataset = DATASET_BUILDERS[task.dataset](request)
    column = dataset.schema.column(task.label)
    for split in dataset.splits.values():
        values = split.column(task.label)
        assert ((values >= 0) & (values < column.size)).all()
    assert len(torch.unique(dataset.splits["train"].column(task.label))) >= 2, "a task needs two classes"

"""The transfer boards from a sweep of probe trials: trained and random-init CNNs on
colored_digits' tasks, entries verified from the stored probe predictions."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from harness.leaderboards import board as boards

from harness.core.errors import HarnessError
from harness.models.probes import DEFAULT_CS
from harness.reports import collect
from harness.sweeps import sweep
from harness.sweeps.launchers import Local

from conftest import PROBE_TASKS as TASKS


def test_a_probe_sweep_holds_its_pretraining_runs_beside_its_probe_runs(probe_sweep):
    done, _ = collect.run_folders(probe_sweep)
    frame = collect.load_runs(done)
    assert frame.groupby("protocol")["run"].nunique().to_dict() == {"transfer": 4, "worst_group": 2}


@pytest.mark.parametrize("name, rows", [("transfer", 2 * 4), ("transfer_best", 2)])
def test_transfer_boards_build_verify_and_render(probe_sweep, tmp_path, name, rows):
    definition = yaml.safe_load((boards.BOARD_DIR / f"{name}.yaml").read_text())
    definition["datasets"] = TASKS  # the shipped board's columns are the study's tasks; this sweep's are digits'
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(definition))
    board = boards.load_board(str(tmp_path / f"{name}.yaml"), tmp_path)
    entries, skipped = boards.build_entries(board, probe_sweep, "test")
    assert skipped == [] and len(entries) == rows  # (trained, random) x 4 layers, or x the best layer
    for entry in entries:
        assert set(entry["results"]) == set(TASKS)
        assert boards.verify(board, entry) == []
    trained = [e for e in entries if e["entrant"]["init"] == "trained"]
    random = [e for e in entries if e["entrant"]["init"] == "random"]

    def best(group, task):
        return max(e["results"][task]["metrics"]["test.probe_acc"]["mean"] for e in group)
    assert best(trained, "digits_colour") > 0.9 and best(random, "digits_colour") > 0.9
    table = boards.render(board, entries)
    assert "digits_colour: test linear probe acc" in table and "digits: train RankMe" in table
    # a tampered number is caught
    entry = entries[0]
    entry["results"]["digits"]["metrics"]["test.probe_acc"]["mean"] += 0.01
    assert any("test.probe_acc" in d for d in boards.verify(board, entry))


def test_an_entry_records_and_shows_each_runs_chosen_c(probe_sweep, tmp_path):
    """Every chosen run of an entry records the C validation chose (the spec's grid: 0.1 or 1),
    the table shows them per task, verify checks them, and an entry made before C was recorded
    verifies and reads "not recorded"."""
    definition = {**yaml.safe_load((boards.BOARD_DIR / "transfer.yaml").read_text()), "datasets": TASKS}
    (tmp_path / "transfer.yaml").write_text(yaml.safe_dump(definition))
    board = boards.load_board(str(tmp_path / "transfer.yaml"), tmp_path)
    entries, _ = boards.build_entries(board, probe_sweep, "test")
    frame = collect.load_runs(collect.run_folders(probe_sweep)[0])
    for entry in entries:
        for task, result in entry["results"].items():
            for run in result["runs"]:
                row = frame[(frame.run == run["hash"]) & (frame.dataset == task) & (frame.layer == entry["entrant"]["layer"])]
                assert run["val.C"] in (0.1, 1.0) and run["val.C"] == row["val.C"].item()
    entry = entries[0]
    header, _, row = [line for line in boards.render(board, [entry]).splitlines() if line.startswith("|")]
    columns = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert columns["digits: C chosen on val, per seed"] == " ".join(f"{r['val.C']:g}" for r in entry["results"]["digits"]["runs"])
    # a changed C is caught; an entry without C (made before it was recorded) is read as not recorded
    original = entry["results"]["digits"]["runs"][0]["val.C"]
    entry["results"]["digits"]["runs"][0]["val.C"] = 1.1 - original
    assert any("digits.runs[0].val.C" in d for d in boards.verify(board, entry))
    for result in entry["results"].values():
        for run in result["runs"]:
            del run["val.C"]
    assert boards.verify(board, entry) == []
    assert "| not recorded " in boards.render(board, [entry])


# The planned trial hashes of the transfer specs (md5 of the sorted hashes, first 12 digits), as the
# code before issue 23 planned them (transfer_vit as it stands since its CNN arms moved to
# transfer_ssl_je and its ViT DirectCLR/single-negative arms were added): the shipped transfer
# entries keep naming these runs.
PLANNED = {"transfer_ssl": (36, "df6ebbc20181"), "transfer_vit": (34, "eff405e05720"),
           "transfer_ssl_je": (10, "b4589d83223a"), "transfer_supervised": (14, "707552f9320c")}


@pytest.mark.parametrize("name", sorted(PLANNED))
def test_the_transfer_specs_keep_their_planned_hashes(name, tmp_path):
    """A spec's runs change only with the spec (or a default it relies on); the board's specs probe
    the full default C grid (transfer_supervised pins its own), and the shipped entries' runs are
    among the ones planned."""
    root = Path(__file__).resolve().parents[1] / "experiments"
    trials, waiting = sweep.Plan(sweep.load_spec(root / f"{name}.yaml"), tmp_path / name).trials()
    hashes = sorted(t.hash for t in trials)
    assert waiting == [] and (len(hashes), hashlib.md5(" ".join(hashes).encode()).hexdigest()[:12]) == PLANNED[name]
    probes = [t for t in trials if t.kind == "probe"]
    assert probes and all((t.cfg["probe"]["cs"] == list(DEFAULT_CS)) == (name != "transfer_supervised") for t in probes)
    shipped = {h for board in ("transfer", "transfer_best") for e in boards.load_entries(boards.load_board(board))
               if e["provenance"]["sweep"] == f"sweeps/{name}" for h in e["provenance"]["config_hashes"]}
    assert shipped <= set(hashes) and (shipped or name == "transfer_supervised")


def test_a_sweep_kind_must_be_a_registered_trial_kind():
    with pytest.raises(HarnessError, match="sweep spec key 'kind' must be one of probe, train, visualize, got 'probes'"):
        sweep.parse_spec({"datasets": ["colored_digits"], "algorithms": ["erm"], "kind": "probes"})


def test_linear_cka_between_models_of_a_sweep(probe_sweep, tmp_path):
    from harness.reports.similarity import model_cka, plot_model_cka

    done, _ = collect.run_folders(probe_sweep)
    runs = sorted(r for r in done if (r / "cka.json").exists())
    labels, matrix = model_cka(runs, "digits", "output")
    assert len(labels) == 4 and any("(random)" in label for label in labels)
    assert np.allclose(np.diag(matrix), 1.0) and np.allclose(matrix, matrix.T)
    assert (matrix[~np.eye(4, dtype=bool)] < 1 - 1e-6).all(), "four different networks"
    # a run against itself: features read back from the cache are the very same
    same = plot_model_cka([runs[0], runs[0]], "digits", "output", tmp_path / "cka.png")
    assert np.allclose(same, 1.0) and (tmp_path / "cka.png").stat().st_size > 0
    with pytest.raises(HarnessError, match="no test features of layer 'block9'"):
        model_cka(runs, "digits", "block9")


@pytest.mark.parametrize("overrides, arms", [({}, ["erm"]), ({"probe": {"cs": [1.0]}}, ["erm"]),
                                             ({"probe.tasks": []}, ["erm"]),
                                             ({}, ["erm", {"name": "jtt", "overrides": {"probe.tasks": ["digits"]}}])])
def test_a_probe_sweep_without_tasks_is_refused_before_anything_starts(tmp_path, overrides, arms, capsys):
    from harness.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"name": "notasks", "datasets": ["colored_digits"], "kind": "probe",
                                "algorithms": arms, "overrides": overrides}))
    assert main(["sweep", str(spec), "--dir", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "probe.tasks" in err[0] and "harness list tasks" in err[0], err
    assert "in the overrides of erm," in err[0] and "jtt" not in err[0]  # the arm that names its tasks passes
    assert not (tmp_path / "sweep").exists()


def test_a_probe_sweep_whose_every_arm_names_its_tasks_is_planned():
    spec = sweep.parse_spec({"datasets": ["colored_digits"], "kind": "probe",
                             "algorithms": [{"name": "erm", "overrides": {"probe.tasks": ["digits"]}}]})
    assert spec.arms[0].overrides == {"probe.tasks": ["digits"]}


PROJECTOR_LAYERS = {"block1", "block2", "block3", "block4", "backbone", "projector1", "output"}
MASKED_LAYERS = {"block1", "block2", "block3", "block4", "output"}
# The shipped ViT entrants (experiments/transfer_vit.yaml): (algorithm, init, a part of the arm) -> layers
VIT_ENTRANTS = {("simclr", "random", "crop_flip"): PROJECTOR_LAYERS, ("simclr", "trained", "crop_flip"): PROJECTOR_LAYERS,
                ("vicreg", "trained", "vit"): PROJECTOR_LAYERS, ("directclr", "trained", "vit"): MASKED_LAYERS,
                ("simclr", "trained", "gaussian_noise"): PROJECTOR_LAYERS,
                ("ijepa", "trained", "ema_steps=100 backbone"): MASKED_LAYERS,
                ("ijepa", "trained", "stop_sigma=0.25"): MASKED_LAYERS, ("mae", "trained", "vit"): MASKED_LAYERS,
                ("supervised_pretrain", "trained", "vit"): PROJECTOR_LAYERS}


def vit_entrant(entrant: dict) -> tuple[str, str, str]:
    """The VIT_ENTRANTS key an entrant of the ViT rows matches (exactly one)."""
    keys = [k for k in VIT_ENTRANTS if k[:2] == (entrant["algorithm"], entrant["init"]) and k[2] in entrant["arm"]]
    assert len(keys) == 1, (entrant, keys)
    return keys[0]


@pytest.mark.parametrize("name, per_layer", [("transfer", True), ("transfer_best", False)])
def test_shipped_entries_verify_when_their_runs_exist(name, per_layer):
    """The committed entries carry the hashes of experiments/transfer_ssl.yaml's and
    experiments/transfer_ssl_je.yaml's runs (the CNN rows) and experiments/transfer_vit.yaml's (the
    ViT rows, arm backbone.name="vit"); CI has no such runs unless those sweeps ran, so this checks
    their shape, and verifies where the runs exist."""
    board = boards.load_board(name)
    entries = boards.load_entries(board)
    vit = [e for e in entries if 'backbone.name="vit"' in e["entrant"]["arm"]]
    cnn = [e for e in entries if e not in vit and e["provenance"]["sweep"] == "sweeps/transfer_ssl"]
    assert len(cnn) == 3 * 3 * (6 if per_layer else 1)  # 3 methods x 3 last-block widths (x 6 layers)
    assert {e["entrant"]["algorithm"] for e in cnn} == {"simclr", "vicreg", "supervised_pretrain"}
    # transfer_ssl_je: DirectCLR (no projector: 4 layers), single-negative noise SimCLR, the untrained CNN
    je = {(e["entrant"]["algorithm"], e["entrant"]["init"], e["entrant"].get("layer")) for e in entries
          if e["provenance"]["sweep"] == "sweeps/transfer_ssl_je"}
    assert len(entries) == len(vit) + len(cnn) + len(je)
    projector = ["block1", "block2", "block3", "backbone", "projector1", "output"] if per_layer else [None]
    assert je == ({("directclr", "trained", layer) for layer in (["block1", "block2", "block3", "output"]
                                                                   if per_layer else [None])}
                  | {(algorithm, init, layer) for algorithm, init in (("simclr", "trained"), ("simclr", "random"))
                     for layer in projector})
    layers: dict[tuple[str, str, str], set[str]] = {}
    for entry in vit:
        assert entry["provenance"]["sweep"] == "sweeps/transfer_vit"
        layers.setdefault(vit_entrant(entry["entrant"]), set()).add(entry["entrant"].get("layer"))
    assert set(layers) == set(VIT_ENTRANTS)  # each entrant once per layer, or once with the best layer
    assert layers == (VIT_ENTRANTS if per_layer else {k: {None} for k in VIT_ENTRANTS})
    assert len(vit) == (sum(map(len, VIT_ENTRANTS.values())) if per_layer else len(VIT_ENTRANTS))
    for entry in entries:
        assert entry["protocol"] == "transfer" and set(entry["entrant"]) == set(board.entrant)
        assert set(entry["results"]) == set(board.datasets) and entry["provenance"]["seeds"] == [0, 1]
    # verifying recomputes every layer of an entry's runs: all best-layer entries, the backbone's per layer
    for entry in [e for e in entries if e["entrant"].get("layer", "backbone") in ("backbone", "block4")]:
        runs = entry["provenance"]["sweep"]
        diffs = boards.verify(board, entry)
        assert diffs == [] or diffs[0].startswith(f"runs not found (finished) in {runs}"), diffs


def test_a_probe_sweep_pretrains_an_ssl_method_and_probes_its_projector_layers(tmp_path):
    spec = sweep.parse_spec({
        "name": "ssl", "datasets": ["colored_digits"], "kind": "probe", "algorithms": ["simclr"],
        "overrides": {"steps": 10, "eval_every": 10, "backbone.name": "cnn", "backbone.options.channels": [4, 8],
                      "algorithm.hparams.projector_width": 6, "probe.tasks": ["digits_colour"], "probe.cs": [1.0],
                      "probe.knn_k": 5}})
    report = sweep.run_sweep(spec, tmp_path / "ssl", Local())
    assert report.ok and report.ran == 2, report  # the pretraining trial, then the probe trial
    frame = collect.load_runs(collect.run_folders(tmp_path / "ssl")[0])
    assert frame.groupby("protocol")["run"].nunique().to_dict() == {"pretraining": 1, "transfer": 1}
    probed = frame[frame.protocol == "transfer"]
    assert sorted(probed.layer) == sorted(["block1", "block2", "backbone", "projector1", "output"])
    assert (probed.algorithm == "simclr").all() and (probed["test.probe_acc"].max() > 0.9)  # colour: easy


def test_the_vit_study_spec_plans_one_pretraining_run_per_trained_network(tmp_path):
    """experiments/transfer_vit.yaml: 9 networks x 2 seeds probed; the random-init ViT has no
    pretraining run, the 8 others one each; every probe has transfer_ssl's tasks and settings
    plus the two position tasks, and every arm the same ViT."""
    root = Path(__file__).resolve().parents[1] / "experiments"
    plan = sweep.Plan(sweep.load_spec(root / "transfer_vit.yaml"), tmp_path / "sweep")
    trials, waiting = plan.trials()
    assert waiting == []
    probes = [t for t in trials if t.kind == "probe"]
    trains = [t for t in trials if t.kind == "train"]
    assert len(probes) == 9 * 2 and len(trains) == 8 * 2
    assert sorted(t.cfg["probe"]["init"] for t in probes).count("random") == 2
    assert {n for t in probes for n in t.needs} == {t.hash for t in trains}
    ssl_plan = sweep.Plan(sweep.load_spec(root / "transfer_ssl.yaml"), tmp_path / "ssl")
    ssl = next(t.cfg["probe"] for t in ssl_plan.trials()[0] if t.kind == "probe")
    positions = [{"name": name, "options": {}} for name in ("dsprites_posx", "dsprites_posy")]
    for trial in probes:
        spec = trial.cfg["probe"]
        assert spec["tasks"] == ssl["tasks"] + positions
        assert spec["cs"] == ssl["cs"] and spec["knn_k"] == ssl["knn_k"]
    vits = [t.cfg["backbone"] for t in probes if t.cfg["backbone"]["name"] == "vit"]
    assert len(vits) == 9 * 2 and all(b == vits[0] for b in vits)
    from harness.models.backbones import vit

    net = vit((3, 14, 14), **vits[0]["options"])  # the ViT: 49 tokens of width 64, 4 blocks
    assert net.grid == (7, 7) and net.embed_dim == 64 and len(net.blocks) == 4


def test_the_cnn_joint_embedding_spec_plans_only_new_runs_at_the_cnn_boards_recipe(tmp_path):
    """experiments/transfer_ssl_je.yaml: DirectCLR, single-negative Gaussian-noise SimCLR and the
    untrained CNN, 2 seeds, at transfer_ssl's recipe: its pretraining configs differ from
    transfer_ssl's default SimCLR run only in the algorithm, and its probes have the same
    settings (DirectCLR, without a projector, fewer layers); none of its trials is one of transfer_ssl's."""
    root = Path(__file__).resolve().parents[1] / "experiments"
    trials, waiting = sweep.Plan(sweep.load_spec(root / "transfer_ssl_je.yaml"), tmp_path / "je").trials()
    assert waiting == []
    ssl_trials = sweep.Plan(sweep.load_spec(root / "transfer_ssl.yaml"), tmp_path / "ssl").trials()[0]
    assert not {t.hash for t in trials} & {t.hash for t in ssl_trials}
    reference = next(t.cfg for t in ssl_trials if t.kind == "train" and t.cfg["algorithm"]["name"] == "simclr"
                     and t.cfg["backbone"]["options"].get("channels") is None and t.cfg["seed"] == 0)
    ssl_probe = next(t.cfg["probe"] for t in ssl_trials if t.kind == "probe")
    trains = [t for t in trials if t.kind == "train"]
    probes = [t for t in trials if t.kind == "probe"]
    assert len(trains) == 2 * 2 and len(probes) == 3 * 2
    assert sorted(t.cfg["probe"]["init"] for t in probes).count("random") == 2
    apart = ("algorithm", "seed", "arm", "probe", "run_dir", "output_dir")
    for trial in trains:
        assert {k: v for k, v in trial.cfg.items() if k not in apart} == {k: v for k, v in reference.items()
                                                                           if k not in apart}
    noisy = [t.cfg["algorithm"]["hparams"] for t in trains if t.cfg["algorithm"]["name"] == "simclr"]
    assert all(h["single_negative"] is True and h["views"] == "gaussian_noise" for h in noisy) and len(noisy) == 2
    for trial in probes:
        spec = trial.cfg["probe"]
        assert {k: spec[k] for k in ("tasks", "cs", "knn_k")} == {k: ssl_probe[k] for k in ("tasks", "cs", "knn_k")}
        direct = trial.cfg["algorithm"]["name"] == "directclr"
        assert spec["layers"] == (["block1", "block2", "block3", "output"] if direct else ssl_probe["layers"])

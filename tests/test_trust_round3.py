"""Trust, second round, the rest (issue 22): each test fails before its fix."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.leaderboards import board as boards
from harness.leaderboards import whole_sweep
from harness.sweeps import sweep

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


# --- class 2: an entry accounts for its whole sweep -----------------------------------------

@pytest.mark.parametrize("which", ["best on test", "worst on validation"])
def test_an_entry_from_a_sweep_copy_with_a_draw_removed_is_caught_and_the_run_named(small_sweep, board_dir,
                                                                                   tmp_path, capsys, which):
    copy = tmp_path / "copy"
    shutil.copytree(small_sweep, copy)
    rows = []
    for run in copy.iterdir():
        cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "done").exists() else None
        if cfg and cfg["algorithm"]["name"] == "erm":
            last = json.loads((run / "results.jsonl").read_text().splitlines()[-1])
            rows.append((last["metrics"], cfg["algorithm"]["hparams_seed"], run))
    metric, sign = ("test", -1) if which == "best on test" else ("val", 1)
    draw = min(rows, key=lambda r: sign * r[0][metric]["worst_group_acc"])[1]
    removed = sorted(run.name for _, d, run in rows if d == draw)  # the draw: its runs of every seed
    for name in removed:
        shutil.rmtree(copy / name)
    definition = str(board_dir / "worst_group.yaml")
    assert main(["leaderboard", "submit", definition, str(copy), "--board-dir", str(board_dir)]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "verify", definition, "--board-dir", str(board_dir)]) == 2
    err = capsys.readouterr().err
    assert f"whole sweep: 2 run(s) its spec plans for this entrant are not among its candidates: {', '.join(removed)}" in err
    assert "group_dro--annotated.json" not in err  # the other entrant is whole


def test_an_entry_made_from_a_whole_sweep_records_its_spec_and_verifies(small_sweep, board_dir, capsys):
    definition = str(board_dir / "worst_group.yaml")
    assert main(["leaderboard", "submit", definition, str(small_sweep), "--board-dir", str(board_dir)]) == 0
    entry = json.loads((board_dir / "entries" / "worst_group" / "erm--annotated.json").read_text())
    assert entry["provenance"]["spec"] == yaml.safe_load((small_sweep / sweep.SPEC_FILE).read_text())
    assert main(["leaderboard", "verify", definition, "--board-dir", str(board_dir)]) == 0


def test_a_shipped_entry_verified_from_its_predictions_must_list_what_its_spec_plans():
    path = boards.BOARD_DIR / "entries" / "worst_group_smoke" / "group_dro--inferred-xrm.json"
    entry = json.loads(path.read_text())
    assert whole_sweep.unaccounted(entry, None) == []
    result = entry["results"]["colored_digits"]
    dropped = sorted(set(result["candidates"]) - {r["hash"] for r in result["runs"]})[0]
    result["candidates"].remove(dropped)
    problems = whole_sweep.unaccounted(entry, None)
    # a trial on inferred groups may become one of several hashes (one per discovery it may choose)
    assert len(problems) == 1 and "1 run(s) its spec plans" in problems[0] and dropped in problems[0]
    del entry["provenance"]["spec"]
    assert "records no spec" in whole_sweep.unaccounted(entry, None)[0]


def _entry_of(spec_path: Path, tmp_path: Path) -> tuple[dict, set[str]]:
    """An entry whose candidates are every run its spec plans for the first arm's algorithm."""
    raw = yaml.safe_load(spec_path.read_text())
    raw.setdefault("name", spec_path.stem)
    plan = sweep.Plan(sweep.parse_spec(raw), tmp_path / spec_path.stem)
    first = plan.roots[0].cfg
    family = {r.hash for r in plan.roots if whole_sweep._family(r.cfg) == whole_sweep._family(first)}
    entry = {"results": {first["dataset"]["name"]: {"candidates": sorted(family)}},
             "provenance": {"sweep": str(tmp_path / spec_path.stem), "spec": raw}}
    return entry, family


@pytest.mark.parametrize("spec", ["transfer_ssl.yaml", "disentanglement_board_posxy.yaml"])
def test_transfer_and_disentanglement_entries_account_for_their_whole_sweep(spec, tmp_path):
    entry, family = _entry_of(EXPERIMENTS / spec, tmp_path)
    assert len(family) > 1 and whole_sweep.unaccounted(entry, None) == []
    candidates = entry["results"][next(iter(entry["results"]))]["candidates"]
    dropped = candidates.pop()
    problems = whole_sweep.unaccounted(entry, None)
    assert len(problems) == 1 and problems[0].endswith(f"not among its candidates: {dropped}")
    candidates.append("f" * 12)
    assert "1 candidate run(s) its spec does not plan: ffffffffffff" in whole_sweep.unaccounted(entry, None)[-1]


# --- class 4: a sweep refuses what a single run would refuse, before writing anything ---------

PROBE = {"steps": 10, "eval_every": 10}
BAD_SPECS = {
    "unknown probe layer": ({"algorithms": ["simclr"], "kind": "probe",
                             "overrides": {**PROBE, "probe": {"tasks": ["digits"], "layers": ["nope"]}}},
                            "unknown probe.layers entry 'nope'; accepted: "),
    "unknown visualize layer": ({"algorithms": ["simclr"], "kind": "visualize",
                                 "overrides": {**PROBE, "visualize": {"layer": "nope"}}},
                                "unknown visualize.layer 'nope'; accepted: "),
    "worst-group method on unlabelled data": ({"datasets": ["fashion_mnist"], "algorithms": ["erm"],
                                               "overrides": PROBE},
                                              "unlabelled examples, which the worst_group protocol of 'erm' cannot"),
    "a probe's upstream training run that its kind refuses": (
        {"datasets": ["fashion_mnist"], "algorithms": ["erm"], "kind": "probe",
         "overrides": {**PROBE, "probe": {"tasks": ["digits"]}}},
        "train trial erm on fashion_mnist, seed 0: dataset 'fashion_mnist' has"),
    "a discovery its kind refuses": (
        {"algorithms": [{"name": "group_dro", "groups": ["inferred:erm"]}], "discovery": {"algorithms": ["erm"]},
         "overrides": PROBE},
        "discovery trial erm on colored_digits, seed 0: algorithm 'erm' does not discover environments"),
    "kNN k larger than the task's training split": (
        {"algorithms": ["simclr"], "kind": "probe",
         "overrides": {**PROBE, "probe": {"tasks": ["digits"], "knn_k": 100000}}},
        "probe.knn_k 100000 is larger than the training split of task 'digits' it draws neighbours from ("),
    "a batch larger than the training split": (
        {"algorithms": ["erm"], "overrides": {**PROBE, "algorithm": {"hparams": {"batch_size": 100000}}}},
        "algorithm.hparams.batch_size 100000 is larger than the training split of dataset 'colored_digits' ("),
    "more sampling steps than diffusion timesteps": (
        {"algorithms": ["simclr"], "kind": "visualize",
         "overrides": {**PROBE, "visualize": {"train_timesteps": 10, "sampling_steps": 20}}},
        "visualize.sampling_steps 20 is more than the 10 visualize.train_timesteps"),
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"/" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_sweep_refuses_what_a_single_run_would_refuse_before_writing_anything(case, dry_run, tmp_path, capsys):
    changes, message = BAD_SPECS[case]
    spec = {"name": "bad", "datasets": ["colored_digits"], "launcher": "local", **changes}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    existing = tmp_path / "existing"  # a sweep folder with something in it already: left byte-identical
    existing.mkdir()
    (existing / "notes.txt").write_text("mine\n")
    for folder in (tmp_path / "fresh", existing):
        before = _tree(tmp_path)
        assert main(["sweep", str(tmp_path / "spec.yaml"), "--dir", str(folder), *(["--dry-run"] if dry_run else [])]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and len(err) < 1000 and message in err, err
        assert _tree(tmp_path) == before
    assert not (tmp_path / "fresh").exists()


def test_a_good_probe_spec_still_plans(tmp_path, capsys):
    spec = {"name": "good", "datasets": ["colored_digits"], "launcher": "local", "algorithms": ["simclr"],
            "kind": "probe", "overrides": {**PROBE, "probe": {"tasks": ["digits"], "layers": ["backbone"]}}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(tmp_path / "spec.yaml"), "--dir", str(tmp_path / "s"), "--dry-run"]) == 0
    assert "probe" in capsys.readouterr().out and not (tmp_path / "s").exists()


# --- class 5: values legal alone, impossible together ------------------------------------------

@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_a_non_finite_dataset_option_is_refused_naming_it(value, tmp_path, capsys):
    code = main(["train", "dataset.name=procedural_dsprites", f"dataset.options.sigma={value}",
                 "algorithm.name=beta_vae", f"output_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'dataset.options.sigma' must be a finite number" in err, err
    assert not (tmp_path / "runs").exists()


# --- class 7: resume repairs what it can and says how otherwise ---------------------------------

def _rows(run: Path) -> list[dict]:
    from harness.core import files
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in files.read_jsonl(run / "results.jsonl")]


@pytest.mark.parametrize("damage", ["the last row lost after its checkpoint", "a damaged row in the middle",
                                    "every row lost"])
def test_resume_makes_lost_or_damaged_rows_again_from_the_stored_predictions(damage, tiny_cfg, tmp_path):
    from harness.core import config
    from harness.runs.run import RepairedRowWarning, train
    cfg = tiny_cfg()
    reference = train(dict(cfg, run_dir=str(tmp_path / "reference")))
    out = config.run_dir(cfg)
    train(cfg)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 3
    if damage == "the last row lost after its checkpoint":
        lines = lines[:-1]
    elif damage == "a damaged row in the middle":
        lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
    else:
        lines = []
    (out / "results.jsonl").write_text("".join(lines))
    (out / "done").unlink()  # as a kill leaves it: the checkpoint written, the run not marked done
    with pytest.warns(RepairedRowWarning, match="made again from step_"):
        train(cfg)
    assert (out / "done").exists()
    assert _rows(out) == _rows(reference)


def test_a_lost_row_whose_predictions_are_gone_too_is_named_with_what_to_do(tiny_cfg, capsys):
    from harness.core import config
    from harness.core.errors import HarnessError
    from harness.runs.run import train
    cfg = tiny_cfg()
    out = config.run_dir(cfg)
    train(cfg)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-1]))
    (out / "done").unlink()
    (out / "predictions" / "step_0000060.npz").unlink()
    with pytest.raises(HarnessError, match="the row of step 60 is lost and its predictions .* missing or altered.* "
                                           "remove the run folder"):
        train(cfg)


def test_a_damaged_row_of_a_finished_run_is_named_with_the_command_that_repairs_it(tmp_path):
    from harness.core import files
    from harness.core.errors import HarnessError
    (tmp_path / "results.jsonl").write_text('{"step": 1}\n{bad\n{"step": 3}\n')
    with pytest.raises(HarnessError, match="line 2 is not valid JSON.*remove the run's `done` file and rerun its "
                                           "command"):
        files.read_jsonl(tmp_path / "results.jsonl")

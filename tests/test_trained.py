"""runs/trained.py: a trained run rebuilt from its folder or its config (the one recipe that
discovery, pictures and probes use)."""
import json

import numpy as np
import pytest
import torch

from harness.core.errors import HarnessError
from harness.core.files import load_arrays, read_jsonl
from harness.runs.run import train
from harness.runs.trained import load_trained

CPU = torch.device("cpu")


def test_a_run_rebuilt_from_its_folder_scores_what_its_last_evaluation_stored(tiny_cfg):
    cfg = tiny_cfg("steps=20", "eval_every=20")
    out = train(cfg)
    trained = load_trained(out, CPU)
    assert trained.cfg["seed"] == cfg["seed"] and trained.run_dir == out and not trained.algorithm.training
    arrays = trained.protocol.record(trained.algorithm, "test", trained.dataset.splits["test"], trained.state, 256)
    np.testing.assert_allclose(arrays["probs"], load_arrays(out / "predictions" / "step_0000020.npz")["test.probs"],
                               atol=1e-6)
    info = json.loads((out / "info.json").read_text())
    rescored = trained.protocol.scores({f"test.{k}": v for k, v in arrays.items()}, info)["test"]
    assert rescored == read_jsonl(out / "results.jsonl")[-1]["metrics"]["test"]
    from_config = load_trained(cfg, CPU)
    assert from_config.run_dir == out
    assert all(torch.equal(a, b) for a, b in zip(from_config.algorithm.parameters(), trained.algorithm.parameters()))


def test_without_its_checkpoint_the_algorithm_is_the_one_the_seed_initialises(tiny_cfg):
    cfg = tiny_cfg("steps=20", "eval_every=20")
    fresh, again = load_trained(cfg, CPU, checkpoint=False), load_trained(cfg, CPU, checkpoint=False)
    assert fresh.run_dir is None
    trained = load_trained(train(cfg), CPU)
    triples = list(zip(fresh.algorithm.parameters(), again.algorithm.parameters(), trained.algorithm.parameters()))
    assert all(torch.equal(a, b) for a, b, _ in triples)
    assert not all(torch.equal(a, c) for a, _, c in triples)


def test_a_folder_without_a_run_or_a_checkpoint_is_named(tiny_cfg, tmp_path):
    with pytest.raises(HarnessError, match="holds no config.yaml"):
        load_trained(tmp_path, CPU)
    with pytest.raises(HarnessError, match="holds no checkpoint.pt"):
        load_trained(tiny_cfg(), CPU)

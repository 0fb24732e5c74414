"""Every benchmark still runs: each script in benchmarks/ at its ``--smoke`` size, in a subprocess
with one thread, exits 0, leaves nothing in its working folder, and ends with ``ratio: <a finite
number>``. A new script is covered by being there; a module the scripts import (their shared
driver) is not a script."""
import ast
import math
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RATIO = re.compile(r"ratio: (\S+)")


def helpers() -> set[str]:
    """Benchmark modules that another benchmark imports (e.g. ``import side_by_side``)."""
    names = {p.stem for p in BENCHMARKS.glob("*.py")}
    imported = set()
    for path in BENCHMARKS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names} & names
            elif isinstance(node, ast.ImportFrom) and node.module in names:
                imported.add(node.module)
    return imported


SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.stem not in helpers())


def test_the_scripts_are_found():
    assert "side_by_side" in helpers()
    assert {"feature_cache", "step_overhead", "vs_peers"} <= {p.stem for p in SCRIPTS}


def smoke(script: Path, folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # the timeout only stops a hung script; a smoke run takes seconds
    return subprocess.run([sys.executable, str(script), "--smoke"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
    """The selected scripts' smoke runs, started together, one per core at a time: each is mostly
    one single-threaded process importing torch, so on two cores the file takes about half as long.
    ``{script: (its working folder, the future of its finished process)}``."""
    selected = [item.callspec.params["script"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        runs: dict[Path, tuple[Path, Future]] = {}
        for script in selected:
            folder = tmp_path_factory.mktemp(script.stem)
            runs[script] = folder, pool.submit(smoke, script, folder)
        yield runs


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_runs_at_its_smoke_size(script: Path, smoke_runs):
    folder, future = smoke_runs[script]
    done = future.result()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = RATIO.fullmatch(last)
    assert match, f"last line {last!r}"
    assert math.isfinite(float(match.group(1)))
    assert list(folder.iterdir()) == []


def test_the_official_hfs_weights_give_the_same_model_in_ours():
    """vs_peers scores the official HFS code's model with our encoder: its ``vae_locatello``
    weights, mapped by ``_hfs_peer.peer_to_ours``, must give what its layers compute (convs of
    kernel 4, stride 2, padding 1 and ReLU, a ReLU layer, then per latent (mean, log-variance)
    interleaved; the decoder the mirror, ending in a sigmoid)."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _hfs_peer import LAYERS, peer_to_ours
        from harness.algorithms.vae import ConvVAE
    finally:
        sys.path.remove(str(BENCHMARKS))
    ours_shapes = ConvVAE(1, 10).state_dict()
    gen = torch.Generator().manual_seed(0)
    peer = {f"{layer}.{kind}": 0.1 * torch.randn(ours_shapes[f"{mapped}.{kind}"].shape, generator=gen)
            for layer, mapped in LAYERS.items() for kind in ("weight", "bias")}
    x = (torch.rand(3, 1, 64, 64, generator=gen) > 0.5).float()
    h = x
    for k in range(1, 5):
        h = F.relu(F.conv2d(h, peer[f"encoder.conv{k}.weight"], peer[f"encoder.conv{k}.bias"], stride=2, padding=1))
    h = F.relu(F.linear(h.flatten(1), peer["encoder.lin.weight"], peer["encoder.lin.bias"]))
    stats = F.linear(h, peer["encoder.dist_statistics.weight"], peer["encoder.dist_statistics.bias"]).view(3, 10, 2)
    z = torch.randn(3, 10, generator=gen)
    h = F.relu(F.linear(F.relu(F.linear(z, peer["decoder.lin1.weight"], peer["decoder.lin1.bias"])),
                        peer["decoder.lin2.weight"], peer["decoder.lin2.bias"])).view(3, 64, 4, 4)
    for k in range(1, 5):
        h = F.conv_transpose2d(h, peer[f"decoder.convT{k}.weight"], peer[f"decoder.convT{k}.bias"], stride=2, padding=1)
        h = torch.sigmoid(h) if k == 4 else F.relu(h)
    vae = ConvVAE(1, 10)
    vae.load_state_dict(peer_to_ours(peer))
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        pixels = torch.sigmoid(vae.decoder(z))
    torch.testing.assert_close(mu, stats[..., 0])
    torch.testing.assert_close(logvar, stats[..., 1])
    torch.testing.assert_close(pixels, h)

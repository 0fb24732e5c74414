"""``harness visualize [CONFIG.yaml] [key.sub=value ...] [--run DIR]``: see what a layer keeps (RCDM)."""
from __future__ import annotations

import argparse

from harness.commands.train import add_run_args, split_args
from harness.core import config as configs
from harness.core import files
from harness.core.errors import HarnessError, shown
from harness.reports import collect
from harness.sweeps.launch import run_locally

HELP = """\
See what a frozen network's representation keeps: train a diffusion model (diffusers' UNet2DModel,
DDPM loss, DDIM sampling) to draw the pretraining dataset's images conditioned on the network's
representation at one layer (RCDM: a learned linear map of it added to the timestep embedding,
a per-channel scale and shift after every residual block's group norm). What stays constant
across the samples of one image is what the layer holds; what varies, what it dropped. For example

  harness visualize visualize.layer=backbone backbone.name=cnn dataset.name=background_fashion_mnist
  harness visualize visualize.layer=output algorithm.name=simclr backbone.name=cnn visualize.steps=300
  harness visualize --run sweeps/rcdm_study/3107bbd1bba1 visualize.layer=block2

The network is the run the same config describes without visualize, trained first (or resumed, or
found) in its own folder (output_dir/<its hash>) as a trial of its own; --run names a finished
pretraining run folder instead (its config.yaml, the overrides on top). visualize keys: layer (any
of the network's layers, projector ones too; a wrong name lists them), image_size (16: the
images are fitted to it; divisible by 2^(levels-1)), channels (each UNet level's width, [32, 64]),
layers_per_block, steps, batch_size, lr, drop (fraction of training representations zeroed: the
unconditional baseline), train_timesteps, sampling_steps (DDIM), n_images (held-out), k_samples,
checkpoint_every, encode_batch_size. The run folder holds grid.png (held-out images, K samples
each, an unconditional one), interpolation.png, samples.npz and predictions/ (scored by the
visualization protocol: retrieval top-1/top-5 against shuffled and unconditional baselines,
attribute retention and disagreement per factor; `harness collect` recomputes them)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p)
    p.add_argument("--run", metavar="DIR", help="a finished pretraining run folder whose network to visualize")
    p.set_defaults(func=run)


def config_of_run(run_dir: str, overrides: list[str]) -> dict:
    """The visualize config of a finished pretraining run folder (named by its config's hash)."""
    folder = files.folder_arg(run_dir, "--run", must_exist=True)
    if not (folder / "config.yaml").is_file() or not (folder / "done").is_file():
        raise HarnessError(f"--run {shown(run_dir)} is not a finished pretraining run folder (it needs config.yaml and "
                           "done); give a folder `harness train` or a sweep finished")
    saved = configs.load(str(folder / "config.yaml"), [])
    if saved.get("probe") is not None or saved.get("visualize") is not None:
        raise HarnessError(f"--run {shown(run_dir)} is a {'probe' if saved.get('probe') else 'visualize'} run, not a "
                           "pretraining run; give the folder of the network's training run")
    cfg = configs.load(str(folder / "config.yaml"), [*overrides, f"output_dir={folder.parent}", "run_dir=null"])
    from harness.runs.visualize import pretraining_config

    if configs.run_dir(pretraining_config(cfg)).resolve() != folder.resolve():
        raise HarnessError(f"--run {shown(run_dir)} is not named by its config's hash "
                           f"({configs.config_hash(pretraining_config(cfg))}), or an override changed the network; "
                           "give a run folder a sweep or `harness train` named, and override only visualize keys")
    return cfg


def run(args: argparse.Namespace) -> int:
    path, overrides = split_args(args.args)
    if args.run is not None:
        if path is not None:
            raise HarnessError("give either a config file or --run DIR, not both")
        cfg = config_of_run(args.run, overrides)
    else:
        cfg = configs.load(path, overrides)
    if cfg["visualize"] is None:
        cfg = configs.load(path, ["visualize={}", *overrides]) if args.run is None else \
            config_of_run(args.run, ["visualize={}", *overrides])
    if args.print_config:
        print(configs.dump(cfg), end="")
        return 0
    out = run_locally("visualize", cfg)
    frame = collect.load_runs([out])
    retrieval = frame[frame["factor"] == "-"].iloc[0]
    print(f"{cfg['algorithm']['name']} at {cfg['visualize']['layer']}: "
          f"retrieval top-1 {100 * retrieval['test.top1']:.1f}% "
          f"(shuffled {100 * retrieval['test.shuffled_top1']:.1f}%, unconditional "
          f"{100 * retrieval['test.unconditional_top1']:.1f}%, chance {100 * retrieval['test.chance_top1']:.1f}%)")
    factors = frame[frame["factor"] != "-"].set_index("factor")
    if len(factors):
        table = factors[["test.real_acc", "test.retention", "test.unconditional_retention", "test.disagreement"]]
        print((100 * table).round(1).to_string())
    print(f"run folder: {out}")
    return 0

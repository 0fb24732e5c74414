"""``harness features [CONFIG.yaml] [key.sub=value ...]``: encode a dataset once with a frozen backbone."""
from __future__ import annotations

import argparse

from tabulate import tabulate

from harness.commands.train import add_config_args, split_args
from harness.core import config as configs
from harness.core.errors import HarnessError
from harness.runs.features import cache_files

HELP = """\
Encode every split of the configured dataset with a frozen backbone and cache the features by
example id, so that runs with the same `features` settings train heads on the cache instead of
encoding images at every step. For example

  harness features dataset.name=waterbirds features.backbone=timm:resnet50 features.pretrained=true
  harness features run.yaml features.batch_size=128 features.num_workers=4
  harness features dataset.name=waterbirds features.backbone=timm:resnet50 features.layer=layer3

features keys: backbone (mlp, cnn, text:<vocab size>, timm:<model>, hf:<model>), pretrained (timm
weights from the local cache), options (backbone options), layer (one of the backbone's layers,
pooled; default output), batch_size, seed (random init), device (auto | cpu | cuda), num_workers
(input decoding processes). The cache lives in output_dir/feature_cache/<key>/, the key covering
backbone, layer, weights, transform and dataset version; a cache that matches is reused."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.runs.run import build_dataset

    path, overrides = split_args(args.args)
    cfg = configs.load(path, overrides)
    if not cfg["features"]:
        raise HarnessError("features is not set; name the frozen encoder, e.g. features.backbone=timm:resnet50 "
                           "(and features.pretrained=true for timm's weights)")
    dataset = build_dataset(cfg)
    meta = dataset.info["features"]
    print(f"{cfg['dataset']['name']} encoded by {meta['backbone']} (layer: {meta['layer']}, "
          f"pretrained: {meta['pretrained']}), "
          f"{meta['dim']} features per example")
    print(f"cache: {meta['dir']}")
    rows = []
    for name, path_ in cache_files(dataset).items():
        n = len(dataset.splits[name])
        rows.append([name, n, path_.stat().st_size / n if n else None, path_.name])
    print(tabulate(rows, headers=["split", "examples", "bytes/example", "file"], floatfmt=".0f"))
    return 0

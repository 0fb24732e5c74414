"""Tiny WILDS folders in each dataset's real on-disk layout, written on the fly for tests.

Each ``make_*`` writes ``<root>/<name>_v1.0/`` with the files WILDS 2.0 reads (and the
``RELEASE_v1.0.txt`` marker that tells WILDS the download is complete) and returns the metadata
table as written, row order = WILDS' example order = our example ids. Images are a few pixels,
coloured by label so that a test can see that the right file was read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
CIVIL_IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
CIVIL_AUXILIARY = ("severe_toxicity", "obscene", "threat", "insult", "identity_attack", "sexual_explicit")


def _folder(root: Path, name: str) -> Path:
    folder = Path(root) / f"{name}_v1.0"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "RELEASE_v1.0.txt").write_text("")
    return folder


def _image(path: Path, label: int, size: int = 8) -> None:
    """A flat image, bright red for label 1 and dark blue for label 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (230, 40, 40) if label else (20, 40, 200)
    Image.new("RGB", (size, size), colour).save(path)


def _grouped_rows(counts: dict[int, dict[tuple[int, int], int]], seed: int) -> pd.DataFrame:
    """Rows (split, y, a) with counts[split][(y, a)] of each, in a shuffled order."""
    rows = [(split, y, a) for split, by_group in counts.items()
            for (y, a), n in by_group.items() for _ in range(n)]
    order = np.random.RandomState(seed).permutation(len(rows))
    return pd.DataFrame([rows[i] for i in order], columns=["split", "y", "a"])


# Every split holds every (y, attribute) group, so worst-group numbers are defined everywhere.
WATERBIRDS_COUNTS = {0: {(0, 0): 5, (0, 1): 2, (1, 0): 1, (1, 1): 3},
                     1: {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2},
                     2: {(0, 0): 6, (0, 1): 5, (1, 0): 4, (1, 1): 6}}


def make_waterbirds(root: Path) -> pd.DataFrame:
    """``waterbirds_v1.0/metadata.csv`` (img_id, img_filename, y, split, place, place_filename)
    and its JPEGs in CUB's class folders."""
    folder = _folder(root, "waterbirds")
    rows = _grouped_rows(WATERBIRDS_COUNTS, seed=1)
    species = {0: "001.Black_footed_Albatross", 1: "070.Green_Violetear"}
    meta = pd.DataFrame({
        "img_id": np.arange(1, len(rows) + 1),
        "img_filename": [f"{species[y]}/{species[y][4:]}_{i:04d}.jpg" for i, y in enumerate(rows.y)],
        "y": rows.y, "split": rows.split, "place": rows.a,
        "place_filename": [f"/{'o/ocean' if a else 'b/bamboo_forest'}/{i:08d}.jpg" for i, a in enumerate(rows.a)],
    })
    meta.to_csv(folder / "metadata.csv", index=False)
    for name, y in zip(meta.img_filename, meta.y):
        _image(folder / name, y)
    return meta


CELEBA_COUNTS = {0: {(0, 0): 4, (0, 1): 3, (1, 0): 3, (1, 1): 1},
                 1: {(0, 0): 1, (0, 1): 1, (1, 0): 1, (1, 1): 1},
                 2: {(0, 0): 5, (0, 1): 4, (1, 0): 4, (1, 1): 3}}


def make_celeba(root: Path) -> pd.DataFrame:
    """``celebA_v1.0/`` with ``list_attr_celeba.csv`` (image_id + the 40 attributes in -1/1),
    ``list_eval_partition.csv`` (image_id, partition) and ``img_align_celeba/*.jpg``.
    Returns image_id, split, y (Blond_Hair) and a (Male) as 0/1."""
    folder = _folder(root, "celebA")
    rows = _grouped_rows(CELEBA_COUNTS, seed=2)
    ids = [f"{i + 1:06d}.jpg" for i in range(len(rows))]
    rng = np.random.RandomState(3)
    attrs = pd.DataFrame(rng.choice([-1, 1], size=(len(rows), len(CELEBA_ATTRIBUTES))), columns=CELEBA_ATTRIBUTES)
    attrs["Blond_Hair"] = np.where(rows.y == 1, 1, -1)
    attrs["Male"] = np.where(rows.a == 1, 1, -1)
    attrs.insert(0, "image_id", ids)
    attrs.to_csv(folder / "list_attr_celeba.csv", index=False)
    pd.DataFrame({"image_id": ids, "partition": rows.split}).to_csv(folder / "list_eval_partition.csv", index=False)
    for name, y in zip(ids, rows.y):
        _image(folder / "img_align_celeba" / name, y)
    return pd.DataFrame({"image_id": ids, "split": rows.split, "y": rows.y, "a": rows.a})


def make_civilcomments(root: Path) -> pd.DataFrame:
    """``civilcomments_v1.0/all_data_with_identities.csv``: an unnamed index column, id,
    comment_text, split (train/val/test), toxicity and the other scores as fractions of raters.
    Identities overlap (a comment may mention several) and some comments mention none; in val and
    test every (identity, label) pair occurs, so WILDS' worst group is defined."""
    folder = _folder(root, "civilcomments")
    rng = np.random.RandomState(4)
    records = []
    for split, copies, extra in (("train", 1, 6), ("val", 1, 2), ("test", 3, 4)):
        for k in range(len(CIVIL_IDENTITIES)):
            for toxic in (0, 1):
                for c in range(copies):
                    identities = {k} | ({(k + 3 + c) % len(CIVIL_IDENTITIES)} if (k + toxic + c) % 3 == 0 else set())
                    records.append((split, toxic, identities))
        for j in range(extra):  # comments that mention no identity
            records.append((split, j % 2, set()))
    order = rng.permutation(len(records))
    rows = []
    for n, i in enumerate(order):
        split, toxic, identities = records[i]
        row = {"id": 1000 + n, "comment_text": f"comment {n} {'you are awful' if toxic else 'thank you'}",
               "split": split, "toxicity": round(0.6 + 0.3 * rng.rand(), 3) if toxic else round(0.4 * rng.rand(), 3)}
        row.update({c: round(0.4 * rng.rand(), 3) for c in CIVIL_AUXILIARY})
        row.update({c: (0.8 if k in identities else 0.1) for k, c in enumerate(CIVIL_IDENTITIES)})
        row["identity_any"] = int(bool(identities))
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "all_data_with_identities.csv")
    return frame


# Hospitals 0, 3, 4 train (WILDS split 0) with a few in-distribution val rows (split 1);
# WILDS moves hospital 1 to the OOD val split and hospital 2 to test whatever the column says.
CAMELYON_ROWS = [  # (center, split column, tumor labels)
    (0, 0, (0, 1, 1, 0)), (0, 1, (1,)), (3, 0, (0, 0, 1)), (4, 0, (1, 0, 1)), (4, 1, (0,)),
    (1, 0, (0, 1, 1, 0, 1)), (2, 0, (1, 0, 0, 1, 1, 0)), (2, 0, (0, 1, 1, 0, 0)),
]


def make_camelyon17(root: Path) -> pd.DataFrame:
    """``camelyon17_v1.0/metadata.csv`` (unnamed index, patient, node, x_coord, y_coord, tumor,
    slide, center, split) and the PNG patches under
    ``patches/patient_XXX_node_N/patch_patient_XXX_node_N_x_X_y_Y.png``."""
    folder = _folder(root, "camelyon17")
    rows = []
    for slide, (center, split, tumors) in enumerate(CAMELYON_ROWS):
        patient, node = f"{10 * center + slide:03d}", slide % 5
        for j, tumor in enumerate(tumors):
            rows.append({"patient": patient, "node": node, "x_coord": 3200 + 96 * j, "y_coord": 9000 + 96 * j,
                         "tumor": tumor, "slide": slide, "center": center, "split": split})
    meta = pd.DataFrame(rows)
    meta.to_csv(folder / "metadata.csv")
    for r in rows:
        stem = f"patient_{r['patient']}_node_{r['node']}"
        _image(folder / "patches" / stem / f"patch_{stem}_x_{r['x_coord']}_y_{r['y_coord']}.png", r["tumor"])
    return meta

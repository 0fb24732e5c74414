"""Writing files so that a kill never leaves half of one behind: temp file, then rename; and
reading untrusted ones (YAML, arrays, checkpoints) without unpickling or unbounded expansion."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import yaml

from harness.core.errors import HarnessError, shown


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; renamed onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = new_file(path.parent, f".{path.name}.", ".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def new_file(folder: Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """A new file of a unique name in ``folder``, open for writing, with the mode every file of
    the harness gets: 0666 less the process umask, applied by the system. (``mkstemp`` makes
    0600 files, colleagues could not read results; reading the umask means setting it, which
    races with other threads.)"""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temp files that writers killed mid-write (SIGKILL skips ``atomic_path``'s
    cleanup) left in ``folder``. Only safe while nobody else writes there."""
    stale = sorted(Path(folder).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | Path) -> Any:
    """Never unpickles: tensors, dicts, lists and numbers only."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_arrays(path: str | Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Never unpickles; a file that is not a readable .npz is a HarnessError naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"{path} is not a readable array file ({shown(str(exc))})") from None


# The most nodes a YAML document may expand to, aliases counted at every use: a few hundred bytes
# of nested aliases can otherwise expand to gigabytes ("billion laughs").
MAX_YAML_NODES = 100_000
SIMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class InvalidYaml(HarnessError):
    """Text that is not YAML at all (a command-line value may then be taken as plain text)."""


MAX_DEPTH = 100  # the deepest nesting of lists and mappings a YAML or JSON value may have


def read_yaml(path: str | Path, what: str) -> Any:
    """A YAML file's content; every way it can fail is a HarnessError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"{what} {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    return parse_yaml(text, f"{what} {str(path)!r}")


def parse_yaml(text: str, what: str) -> Any:
    """YAML text's value, its alias expansion and nesting bounded (MAX_YAML_NODES, MAX_DEPTH):
    the one reader of files and command-line values alike. Failures are a HarnessError naming ``what``."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # a character YAML does not allow
        raise InvalidYaml(f"{what} is not valid YAML: {shown(str(exc), 300)}") from None
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise HarnessError(f"{what} expands beyond {MAX_YAML_NODES} values through its aliases; "
                               "write the values out")
        if node is not None and _depth(node, 0) > MAX_DEPTH:
            raise HarnessError(f"{what} nests lists or mappings deeper than {MAX_DEPTH} levels")
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise InvalidYaml(f"{what} is not valid YAML: {shown(str(exc), 300)}") from None
    except RecursionError:
        raise HarnessError(f"{what} nests lists or mappings deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _depth(node: yaml.Node, depth: int) -> int:
    """How deep ``node`` nests (stopping past MAX_DEPTH; a cycle is refused by the size check first)."""
    if depth > MAX_DEPTH or not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
        return depth
    children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
    return max((_depth(child, depth + 1) for child in children), default=depth + 1)


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file's value; not UTF-8, not JSON, or nested deeper than MAX_DEPTH: a HarnessError naming it."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    if _json_depth(text) > MAX_DEPTH:
        raise HarnessError(f"{what} {str(path)!r} nests lists or mappings deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{what} {str(path)!r} is not valid JSON: {exc.msg} (line {exc.lineno})") from None


def _json_depth(text: str) -> int:
    """An upper bound of a JSON text's nesting: brackets outside strings, counted without parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def _expanded_size(node: yaml.Node, sizes: dict[int, float]) -> float:
    """How many nodes ``node`` stands for once every alias is expanded (inf for a cycle)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = float("inf")  # seen again before it is done: the document refers to itself
    children: list = []
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    total = 1.0
    for child in children:
        total += _expanded_size(child, sizes)
        if total > MAX_YAML_NODES:
            break
    sizes[key] = total
    return total


def read_yaml_mapping(path: str | Path, what: str, accepted: str = "") -> dict:
    """A YAML file that must hold a mapping (a config, a sweep spec)."""
    raw = read_yaml(path, what)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise HarnessError(f"{what} {str(path)!r} must hold a mapping{accepted}")
    return raw


def simple_name(value: Any, what: str) -> str:
    """``value`` if it is a name that can only mean a folder inside its parent: letters, digits,
    ``_``, ``.`` and ``-``, not starting with ``.`` or ``-``; else a HarnessError."""
    if not isinstance(value, str) or not SIMPLE_NAME.fullmatch(value):
        raise HarnessError(f"{what} must be a simple name (letters, digits, _ . -, not starting with . or -; "
                           f"at most 100 characters), got {shown(value)}")
    return value


NAME_MAX = 255  # bytes in one name of a path (ext4, XFS, NFS, Lustre, GPFS)
PATH_MAX = 4096  # bytes in a whole path (Linux)


def inside(folder: str | Path, *names: Any, what: str = "file name") -> Path:
    """``folder/names...`` after checking that each name is one plain name (a string, not empty,
    not ``.`` or ``..``, no separator or NUL, at most NAME_MAX bytes) and that the path, symbolic
    links resolved, lies inside ``folder``; else a HarnessError. Every path the harness writes
    (or reads) from a name that came from a file or a command line is built with it."""
    for name in names:
        problem = _name_problem(name)
        if problem:
            raise HarnessError(f"{what} {shown(name)} {problem}: it must be one name, not a path")
    path = Path(folder).joinpath(*names)
    root = Path(folder).resolve()
    if not path.resolve().is_relative_to(root):
        raise HarnessError(f"{what} {shown(str(path))} leads outside {shown(str(folder))} (a link points away)")
    return path


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"is of type {type(name).__name__}"
    if name in ("", ".", ".."):
        return "is not a name"
    if "/" in name or "\\" in name or "\0" in name:
        return "holds a path separator or NUL"
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        return f"is longer than the {NAME_MAX} bytes a file system allows"
    return None


def folder_arg(value: Any, what: str, must_exist: bool = False) -> Path:
    """A folder given on a command line or in a config (``--board-dir``, ``--dir``, ``output_dir``):
    not empty, no name in it too long for the file system, not a file, not under a file (and
    existing when ``must_exist``); else a HarnessError saying which."""
    text = str(value) if isinstance(value, (str, Path)) else None
    if not text or not text.strip():
        raise HarnessError(f"{what} must be a folder path, got {shown(value)}")
    if "\0" in text or len(text.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise HarnessError(f"{what} {shown(text)} is not a usable path (NUL, or over {PATH_MAX} bytes)")
    path = Path(text)
    long = [part for part in path.parts if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX]
    if long:
        raise HarnessError(f"{what}: the name {shown(long[0])} is longer than the {NAME_MAX} bytes a file system allows")
    for at in (path, *path.parents):
        if at.exists() and not at.is_dir():
            raise HarnessError(f"{what} {shown(text)}: {shown(str(at))} is a file, not a folder")
    if must_exist and not path.is_dir():
        raise HarnessError(f"{what} {shown(text)} is not a folder")
    return path


def file_arg(value: Any, what: str) -> Path:
    """A file to write, given on a command line (``--output``): its folder as :func:`folder_arg`
    checks it, and not an existing folder."""
    path = Path(str(value))
    if not str(value).strip() or path.name in ("", ".", ".."):
        raise HarnessError(f"{what} must be a file path, got {shown(value)}")
    folder_arg(path.parent, what)
    if path.is_dir():
        raise HarnessError(f"{what} {shown(str(value))} is a folder; give a file path")
    inside(path.parent, path.name, what=what)
    return path


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TornLineWarning(UserWarning):
    """A JSON-lines file ended in a line cut short (its writer was killed mid-append); dropped."""


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of an appended JSON-lines file. A last line without its newline that is not
    valid JSON is what a kill during an append leaves: it is dropped with a
    :class:`TornLineWarning` (a rewrite of the file, as resume does, removes it). A bad line
    anywhere else is a HarnessError naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}: dropped its torn last line (line {number}, a write cut short)",
                              TornLineWarning, stacklevel=2)
                break
            raise HarnessError(f"{path}: line {number} is not valid JSON ({exc.msg}); only a torn last line "
                               "(a write cut short) is dropped; a run's results.jsonl is made again from its stored "
                               "predictions when the run resumes: remove the run's `done` file and rerun its "
                               "command (harness train with its config.yaml, or its sweep)") from None
    return rows


def read_rows(path: str | Path) -> list[dict]:
    """The lines of an appended JSON-lines file that are mappings, any other line (torn, damaged)
    left out: for a reader that makes the missing rows again (a run's resume)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}: dropped its torn last line (line {number}, a write cut short)",
                              TornLineWarning, stacklevel=2)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

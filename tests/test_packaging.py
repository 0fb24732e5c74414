"""The install: the checkout builds, as a wheel and as an editable install, without a single
setuptools warning, and the wheel holds every module, the plugin packages and the boards' data.

The builds run on a copy of the checkout's files (not the checkout, which they would litter with
build/ and egg-info) with this environment's setuptools (the test extra), without build isolation,
so nothing is downloaded."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
# setuptools' warnings ("SetuptoolsDeprecationWarning", "BuildBackendWarning", distutils'
# "warning: no files found ..."); pip's own "WARNING:" lines (e.g. about this machine's pip.conf) are not
WARNING = re.compile(r"Warning|warning:")


def checkout_copy(dest: Path) -> Path:
    """The files a fresh clone would have, plus new files not yet committed (not ignored ones)."""
    listed = subprocess.run(["git", "-C", str(PROJECT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = PROJECT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def run(command: list[str], cwd: Path) -> str:
    """The command's whole output; byte-compiling left on (with PYTHONDONTWRITEBYTECODE set, setuptools
    says "warning: byte-compiling is disabled": the environment's choice, not the package's)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return checkout_copy(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    log = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(out),
               str(source)], cwd=out)
    return next(out.glob("shift_harness-*.whl")), log


def test_the_wheel_builds_without_a_setuptools_warning(wheel):
    _, log = wheel
    assert "Successfully built shift-harness" in log
    assert [line for line in log.splitlines() if WARNING.search(line)] == []


def test_the_editable_install_has_no_setuptools_warning(source, tmp_path):
    """What `make install` runs, `pip install -e .` (pip shows the backend's warnings as
    BuildBackendWarning), into a prefix of its own (``--ignore-installed``: the environment's own
    install of the project is left as it is, not uninstalled first)."""
    log = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed",
               "--prefix", str(tmp_path), "-e", str(source)], cwd=tmp_path)
    assert "Successfully installed shift-harness" in log
    assert [line for line in log.splitlines() if WARNING.search(line)] == []


def test_the_wheel_holds_the_modules_plugins_and_board_data(source, wheel):
    path, _ = wheel
    names = set(zipfile.ZipFile(path).namelist())
    package = source / "harness"
    boards = package / "leaderboards"
    shipped = [*package.rglob("*.py"), *boards.glob("*.yaml"), *boards.glob("*.md"), *boards.glob("entries/**/*.json")]
    expected = {p.relative_to(source).as_posix() for p in shipped}
    assert {"harness/algorithms/erm.py", "harness/datasets/colored.py", "harness/leaderboards/worst_group.yaml",
            "harness/leaderboards/entries/worst_group/erm--none.json"} <= expected
    assert expected - names == set()
    # one import package: no top-level algorithms/datasets/tests, nothing but harness and the metadata
    dist_info = path.name.split("-py3")[0] + ".dist-info"  # shift_harness-<version>.dist-info
    assert {n.split("/")[0] for n in names} == {"harness", dist_info}
    metadata = zipfile.ZipFile(path).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert f"{dist_info}/licenses/LICENSE" in names

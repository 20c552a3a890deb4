"""Installed use: a wheel of this checkout, installed into a scratch prefix, runs the series from an empty
folder with every output under that folder, nothing written into the checkout or the installed package; the
notebooks ship inside the package."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dermgan").rglob("__init__.py")}
    assert folders | {"dermgan.notebooks"} == listed


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_an_installed_wheel_runs_the_series_from_an_empty_folder_and_writes_nowhere_else(tmp_path):
    status, had_build = git_status(), (ROOT / "build").exists()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    # --no-build-isolation: the build backend (setuptools) comes from this environment, nothing is downloaded
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "wheel").glob("dermgan-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    assert sorted(p.name for p in (site / "dermgan" / "notebooks").glob("*.ipynb")) == \
        sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    installed = files_under(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DERMGAN_HOME", "DERMGAN_REFERENCES")}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", DERMGAN_BATCH="1")
    for notebook in ("00", "01"):
        done = subprocess.run([sys.executable, "-m", "dermgan", "run", "--profile", "smoke", "--only",
                               notebook, "--device", "cpu"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        assert f"runs go under {work}" in done.stderr  # the note of a run outside any checkout
        assert "executed notebooks in runs/smoke/executed/; artefacts" in done.stdout.splitlines()[-1]
    executed = work / "runs" / "smoke" / "executed"
    assert sorted(p.name for p in executed.glob("*.ipynb")) == ["00_environment.ipynb", "01_data.ipynb"]
    manifest = (executed / "manifest.json").read_text()
    assert str(site / "dermgan" / "notebooks") in manifest  # the notebooks that ship in the wheel
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # every output under the working folder
    assert (work / "runs" / "smoke" / "data").is_dir()  # 01's dataset cache
    assert files_under(site) == installed  # nothing written into the installed package
    assert git_status() == status  # nor into the checkout
    assert (ROOT / "build").exists() == had_build  # and the wheel build left no build/ folder

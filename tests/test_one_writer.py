"""One writer per run directory (the lock of `run` and `train`), and a manifest that never stays "running" or
stops a run because of its shape."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nbclient.exceptions import DeadKernelError

from dermgan import pipeline, runtime
from test_pipeline import QUIET, ROOT, fake_papermill, printed, run_cli, series, write_notebook  # noqa: F401

HOLDER = ("import sys, time\nfrom dermgan.runtime import hold_run_dir\nhold_run_dir(sys.argv[1])\n"
          "print('held', flush=True)\ntime.sleep(120)")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/run, until the test ends."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def lock_is_free(run_dir: Path) -> bool:
    """Whether another process could take the lock now (asked from a separate process)."""
    probe = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\ntry:\n"
             "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)")
    return subprocess.run([sys.executable, "-c", probe, str(run_dir / runtime.LOCK_FILE)]).returncode == 0


def wait_for_holder(run_dir: Path, pid: int, process, timeout=240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((run_dir / runtime.LOCK_FILE).read_text()).get("pid") == pid:
                return
        except (OSError, ValueError):
            pass
        if process.poll() is not None:
            pytest.fail(f"the first command ended before it held the lock: {process.communicate()}")
        time.sleep(0.2)
    pytest.fail("the first command never took the lock")


# -- the lock -----------------------------------------------------------------------------------------------


def test_two_concurrent_train_commands_on_one_run_dir_one_refused_the_other_completes(tmp_path):
    run = tmp_path / "run"
    args = ("train", "--profile", "smoke", "--model", "pix2pix", "--steps", "20", "--device", "cpu",
            "--run-dir", str(run))
    first = subprocess.Popen([sys.executable, "-m", "dermgan", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "DERMGAN_BATCH": "1"})
    try:
        wait_for_holder(run, first.pid, first)
        first.send_signal(signal.SIGSTOP)  # the second command starts while the first is surely mid-run
        try:
            second = run_cli(*args)
        finally:
            first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode == 1 and second.stderr.count("\n") == 1, second.stderr
    holder = f"process {first.pid} (python -m dermgan train --profile smoke"
    assert f"run dir {run} is in use by {holder}" in second.stderr
    assert "wait until it ends or stop it, or use another run dir" in second.stderr
    assert first.returncode == 0, err
    assert "pix2pix: step 20 (20 this run" in out
    with open(run / "logs" / "pix2pix.csv", newline="") as f:
        lines = f.read().splitlines()
    assert sum(line.startswith("step,") for line in lines) == 1  # one header, one run's rows
    steps = [int(row["step"]) for row in csv.DictReader(lines)]
    assert steps == [5, 10, 15, 20]
    assert lock_is_free(run)  # released when the command ended


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, holder):
    run = tmp_path / "run"
    holder.kill()  # SIGKILL: nothing of it runs to release the lock; the OS does
    holder.wait()
    assert json.loads((run / runtime.LOCK_FILE).read_text())["pid"] == holder.pid  # its record is still there
    try:
        assert runtime.hold_run_dir(run) is not None
        assert json.loads((run / runtime.LOCK_FILE).read_text())["pid"] == os.getpid()
        assert not lock_is_free(run)
    finally:
        runtime.release_run_dir(run)
    assert lock_is_free(run)


def test_a_second_command_is_refused_in_one_line_and_writes_nothing(series, tmp_path, holder):
    run, out = tmp_path / "run", tmp_path / "out"
    refused = run_cli("run", "--profile", "smoke", "--only", "00", "--notebooks-dir", str(series),
                      "--output-dir", str(out), "--run-dir", str(run))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert f"error: run dir {run} is in use by process {holder.pid} (-c {run}, since " in refused.stderr
    assert not out.exists() and sorted(p.name for p in run.iterdir()) == [runtime.LOCK_FILE]
    # the arguments are checked before the lock: a bad request gets its own error, whoever holds the folder
    bad = run_cli("run", "--profile", "smoke", "--only", "nosuch", "--notebooks-dir", str(series),
                  "--output-dir", str(out), "--run-dir", str(run))
    assert "unknown notebook 'nosuch'" in bad.stderr


def test_a_series_holds_the_lock_its_kernels_work_under_it_and_it_is_released(tmp_path):
    notebooks, run, out = tmp_path / "notebooks", tmp_path / "run", tmp_path / "out"
    notebooks.mkdir()
    write_notebook(notebooks / "00_starts.ipynb",
                   "from dermgan import runtime\n"
                   "ctx = runtime.start(profile, run_dir, seed, device, dataset, data_root)\n"
                   "import json\nprint('holder', json.loads((ctx.run_dir / 'run.lock').read_text())['pid'])")
    write_notebook(notebooks / "01_fails.ipynb", "raise ValueError('deliberate')")
    with pytest.raises(pipeline.NotebookFailure, match="01_fails"):
        pipeline.run_series("smoke", notebooks, out, run_dir=str(run), log=QUIET)
    # the kernel did not refuse itself: the series (this process) held the lock
    assert f"holder {os.getpid()}" in printed(out / "00_starts.ipynb")
    assert lock_is_free(run) and runtime.LOCK_VARIABLE not in os.environ  # released after the failure too


# -- the manifest -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ['{"profile": "smoke", "notebooks": [1, 2]}',
                                     '{"profile": "smoke", "notebooks": {"00_first.ipynb": "ok"}}',
                                     '{"notebooks": [], "earlier_runs": [{"notebook": 3}]}'])
def test_a_manifest_of_the_wrong_shape_is_kept_aside_and_the_run_starts(series, tmp_path, fake_papermill,
                                                                        content):
    out, notes = tmp_path / "out", []
    out.mkdir()
    (out / "manifest.json").write_text(content)
    pipeline.run_series("smoke", series, out, run_dir=str(tmp_path / "run"), only="00",
                        log=lambda *a, **k: notes.append(" ".join(map(str, a))))
    (aside,) = out.glob("manifest.corrupt-*.json")
    assert aside.read_text() == content
    assert any("could not be read" in n and "is not a list of entries" in n and aside.name in n
               for n in notes)
    assert json.loads((out / "manifest.json").read_text())["notebooks"][0]["status"] == "ok"


@pytest.mark.parametrize("make_error", [lambda: OSError(errno.ENOSPC, "No space left on device"),
                                        lambda: DeadKernelError("Kernel died")])  # e.g. killed for memory
def test_no_manifest_entry_stays_running_whatever_ends_the_series(series, tmp_path, fake_papermill,
                                                                   make_error):
    out = tmp_path / "out"
    fake_papermill.update(then=make_error())
    with pytest.raises(type(make_error())):
        pipeline.run_series("smoke", series, out, run_dir=str(tmp_path / "run"), only="00", log=QUIET)
    (entry,) = json.loads((out / "manifest.json").read_text())["notebooks"]
    assert entry["status"] == "failed" and str(make_error()) in entry["error"]


def test_a_series_killed_by_sigkill_leaves_its_records_and_the_next_run_marks_it_interrupted(tmp_path):
    notebooks, out, run = tmp_path / "notebooks", tmp_path / "out", tmp_path / "run"
    notebooks.mkdir()
    write_notebook(notebooks / "00_quick.ipynb", "print('done')")
    write_notebook(notebooks / "01_slow.ipynb", f"import os, time\nopen({str(tmp_path / 'kernel')!r}, 'w')"
                                                f".write(str(os.getpid()))\ntime.sleep(120)")
    command = ["run", "--profile", "smoke", "--notebooks-dir", str(notebooks), "--output-dir", str(out),
               "--run-dir", str(run)]
    process = subprocess.Popen([sys.executable, "-m", "dermgan", *command], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "kernel").is_file() or not (tmp_path / "kernel").read_text():
            assert time.monotonic() < deadline and process.poll() is None, "the series never reached 01"
            time.sleep(0.2)
        process.kill()  # SIGKILL: no handler runs, the manifest is what was written as 01 started
        process.wait()
    finally:
        process.kill()
        if (tmp_path / "kernel").is_file() and (tmp_path / "kernel").read_text():
            os.kill(int((tmp_path / "kernel").read_text()), signal.SIGKILL)  # the orphaned kernel
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pid"] == process.pid
    assert [(e["notebook"], e["status"]) for e in manifest["notebooks"]] == [("00_quick.ipynb", "ok"),
                                                                           ("01_slow.ipynb", "running")]
    notes = []
    earlier = pipeline.earlier_entries(out / "manifest.json", "smoke", lambda *a, **k: notes.append(a[0]))
    assert [(e["notebook"], e["status"]) for e in earlier] == [("00_quick.ipynb", "ok"),
                                                             ("01_slow.ipynb", "interrupted")]
    assert json.loads((out / "manifest.json").read_text())["notebooks"][1]["status"] == "interrupted"
    assert any(f"process {process.pid}, which has ended" in n for n in notes)
    assert lock_is_free(run)  # the killed series' lock went with it

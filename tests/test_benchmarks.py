"""benchmarks/run_all.py and _report: a user's `make benchmarks` writes under runs/benchmarks (git ignores
it), the committed tables change only with --references, and a run says what it runs and for how long."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _report  # noqa: E402
import run_all  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DERMGAN_HOME", str(tmp_path))
    monkeypatch.delenv("DERMGAN_REFERENCES", raising=False)
    importlib.reload(_report)  # it picks its folder when imported; run_all.main imports this module
    yield tmp_path
    monkeypatch.undo()
    importlib.reload(_report)  # as it was for the other tests


def test_results_go_under_runs_unless_the_run_refreshes_the_references(home, monkeypatch):
    assert importlib.reload(_report).RESULTS == home / "runs" / "benchmarks" / "results"
    monkeypatch.setenv("DERMGAN_REFERENCES", "1")
    assert importlib.reload(_report).RESULTS == ROOT / "benchmarks" / "results"


def test_the_plan_names_the_benchmarks_and_their_duration_last_time():
    timed = run_all.plan_text(["a.py", "b.py"], {"a.py": 100.0, "b.py": 50.0}, Path("/r"))
    assert timed == ("benchmarks: a.py, b.py\nexpected duration: about 2 min 30 s (their times last run)\n"
                     "results: /r")
    partly = run_all.plan_text(["a.py", "c.py"], {"a.py": 100.0}, Path("/r"))
    assert "at least 1 min 40 s (1 of them not timed yet)" in partly
    assert run_all.UNTIMED in run_all.plan_text(["c.py"], {}, Path("/r"))


def committed(folder: str) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", folder], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def test_a_users_run_writes_tables_timings_and_readme_under_runs_and_leaves_the_references(home, capsys):
    before = committed("benchmarks")
    run_all.main(["--only", "notebook_times.py"])
    out = capsys.readouterr().out
    results = home / "runs" / "benchmarks" / "results"
    assert out.startswith(f"benchmarks: notebook_times.py\nexpected duration: ")
    assert f"results: {results}" in out and "== notebook_times.py" in out
    assert (results / "notebook_times.md").is_file()
    assert (home / "runs" / "benchmarks" / "README.md").is_file()
    timings = json.loads((results / "timings.json").read_text())
    assert list(timings) == ["full"] and timings["full"]["notebook_times.py"] > 0
    assert committed("benchmarks") == before
    run_all.main(["--only", "notebook_times.py"])  # the second run knows how long the first took
    assert "expected duration: about" in capsys.readouterr().out


def test_step_costs_keep_each_profile_apart_and_read_the_earlier_layout(home, monkeypatch):
    """A cpu-profile run must not replace the paper profile's costs on the same device (other sizes, other
    costs), and the table of the earlier layout (one entry per device) is read with nothing lost."""
    import bench_step_costs as bench
    from dermgan import estimate

    monkeypatch.setattr(bench, "RESULT", home / "step_costs.json")
    monkeypatch.setattr(bench._report, "RESULTS", home)
    paper = {"profile": "paper", "units": {"render": {"s_per_step": 2.0}}}
    cuda = {"profile": "paper", "units": {"dermgan/dermgan": {"s_per_step": 0.05}}}
    bench.RESULT.write_text(json.dumps({"devices": {"cpu": paper, "cuda:H100": cuda}}))
    record = bench.read_record()
    assert record == {"profiles": {"paper": {"cpu": paper, "cuda:H100": cuda}}}
    record["profiles"].setdefault("cpu", {})["cpu"] = {"profile": "cpu", "units": {"render": {"s_per_step": 0.1}}}
    bench.write(record)
    costs = estimate.load_costs(bench.RESULT)
    assert costs["paper"]["cpu"]["units"]["render"]["s_per_step"] == 2.0
    assert costs["cpu"]["cpu"]["units"]["render"]["s_per_step"] == 0.1
    assert costs["paper"]["cuda:H100"] == cuda


def test_sweep_verdicts_apply_the_declared_rule_paired_over_seeds():
    """'better' only when the paired t-interval lies below zero and the difference exceeds the MDE; a shift
    inside the seeds' noise, or one seed, decides nothing."""
    import sweep_gan

    def rows(arm, kids):
        return [{"family": "dermgan", "arm": arm, "seed": s, "steps": 10, "kid / blurred": k,
                 "domain_kid / blurred": 1.0 + s, "swd": 5.0} for s, k in enumerate(kids)]

    base = [4.0, 5.0, 6.0, 4.5]
    found = sweep_gan.verdicts(rows("before", base) + rows("lower", [b - 1.0 + d for b, d in
                                                                      zip(base, (0.01, -0.01, 0.02, 0.0))])
                               + rows("noise", [b + d for b, d in zip(base, (0.5, -0.5, 0.4, -0.4))])
                               + rows("higher", [b + 2.0 + d for b, d in zip(base, (0.1, -0.1, 0.0, 0.05))]))
    kid = {r["arm"]: r for r in found if r["metric"] == "kid / blurred"}
    assert kid["lower"]["verdict"] == "better" and abs(kid["lower"]["difference"] + 0.995) < 1e-9
    assert kid["higher"]["verdict"] == "worse"
    assert kid["noise"]["verdict"].startswith("no detectable difference (MDE ")
    assert kid["noise"]["low"] < 0 < kid["noise"]["high"] and kid["lower"]["seeds"] == 4
    same = [r for r in found if r["metric"] == "domain_kid / blurred"]  # identical scores: no difference, MDE 0
    assert all(r["verdict"].startswith("no detectable") and r["difference"] == 0 for r in same)
    one = sweep_gan.verdicts(rows("before", [4.0]) + rows("lower", [1.0]))
    assert one and all(r["verdict"].startswith("no detectable") for r in one)
    assert sweep_gan.verdicts(rows("lower", [1.0, 2.0])) == []  # no baseline in the table: no comparison

"""Figures and tables: byte-identical when regenerated, provenance beside every file, every table format."""

import hashlib
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dermgan import viz  # noqa: E402


def digests(folder, stem):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob(f"{stem}.*"))}


def a_figure():
    fig, ax = plt.subplots(figsize=(viz.COLUMN_WIDTH, 2))
    for k in range(3):
        ax.plot([0, 1, 2], [k, k + 1, k * 2], label=f"model {k}")
    ax.legend()
    ax.set_title("a figure")
    return fig


def test_a_regenerated_figure_is_byte_identical_and_carries_provenance(tmp_path):
    viz.use_style()
    found = []
    for _ in range(2):
        fig = a_figure()
        viz.save_figure(fig, tmp_path, "fig", {"notebook": "09", "profile": "smoke", "dataset": "synthetic"})
        plt.close(fig)
        found.append(digests(tmp_path, "fig"))
    assert set(found[0]) == {"fig.pdf", "fig.png", "fig.json"}
    assert found[0] == found[1]
    record = json.loads((tmp_path / "fig.json").read_text())
    assert record["data"] == viz.SYNTHETIC_NOTE and record["notebook"] == "09" and "git_commit" in record
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"CreationDate" not in (tmp_path / "fig.pdf").read_bytes()


def test_style_uses_the_colour_blind_safe_palette_and_300_dpi():
    viz.use_style()
    cycle = [matplotlib.colors.to_hex(c) for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]]
    assert cycle[:len(viz.PALETTE)] == [c.lower() for c in viz.PALETTE]
    assert plt.rcParams["savefig.dpi"] == 300 and plt.rcParams["pdf.fonttype"] == 42


def test_tables_in_every_format_keep_intervals_and_n(tmp_path):
    table = pd.DataFrame({"model": ["dermgan", "pix2pix"], "KID [95% CI]": ["0.136 [0.131, 0.142]", "0.204 [0.19, 0.22]"],
                          "n": [600, 600]})
    viz.save_table(table, tmp_path, "kid", {"notebook": "09", "dataset": "ham10000"}, caption="KID & n_real")
    assert pd.read_csv(tmp_path / "kid.csv").equals(table)
    tex = (tmp_path / "kid.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "0.136 [0.131, 0.142]" in tex
    assert "KID \\& n\\_real" in tex
    md = (tmp_path / "kid.md").read_text().splitlines()
    assert md[2] == "| model | KID [95% CI] | n |" and md[4] == "| dermgan | 0.136 [0.131, 0.142] | 600 |"
    assert json.loads((tmp_path / "kid.json").read_text())["data"] == "real dataset: ham10000"


def test_a_figure_without_a_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="must name the 'dataset'"):
        viz.save_figure(a_figure(), tmp_path, "nameless", {"notebook": "09"})


def test_long_column_labels_wrap_inside_their_cell_and_short_ones_stay_on_one_line():
    """Class names such as 'squamous cell carcinoma' overlapped their neighbours in the map-to-image grid."""
    images = np.zeros((3, 8, 8, 3), np.uint8)
    fig = viz.image_grid([images], col_labels=["nevus", "squamous cell carcinoma", "basal cell carcinoma"])
    titles = [ax.get_title() for ax in fig.axes[:3]]
    plt.close(fig)
    assert titles[0] == "nevus"
    assert titles[1] == "squamous cell\ncarcinoma" and titles[2].replace("\n", " ") == "basal cell carcinoma"
    longest_line = max(len(line) for t in titles for line in t.split("\n"))
    assert longest_line <= 14  # 11 characters per inch of a 1.3-inch cell


def test_the_output_check_names_every_missing_empty_or_unprovenanced_file(tmp_path):
    sources = {"evaluated": {"05": "c" * 40}, "trained": {"dermgan": ["d" * 40]}}
    viz.save_figure(a_figure(), tmp_path, "09_fig_synthetic", {"notebook": "09", "profile": "smoke",
                                                               "dataset": "synthetic", "commits": sources})
    viz.save_table(pd.DataFrame({"a": [1.0]}), tmp_path, "09_tab_synthetic",
                   {"notebook": "09", "profile": "smoke", "dataset": "synthetic"}, "caption")
    expected = dict(figures=["09_fig_synthetic"], tables=["09_tab_synthetic"])
    assert viz.check_outputs(tmp_path, **expected) == ["09_tab_synthetic.json: no commits"]
    viz.save_table(pd.DataFrame({"a": [1.0]}), tmp_path, "09_tab_synthetic",
                   {"notebook": "09", "profile": "smoke", "dataset": "synthetic", "commits": sources}, "caption")
    expected = dict(figures=["09_fig_synthetic"], tables=["09_tab_synthetic"])
    assert viz.check_outputs(tmp_path, **expected) == []
    assert viz.check_outputs(tmp_path, figures=["09_other"]) == [
        "09_other.pdf: missing", "09_other.png: missing", "09_other.json: missing"]
    (tmp_path / "09_fig_synthetic.png").unlink()
    (tmp_path / "09_tab_synthetic.md").write_text("")
    record = json.loads((tmp_path / "09_tab_synthetic.json").read_text())
    del record["profile"]
    (tmp_path / "09_tab_synthetic.json").write_text(json.dumps(record))
    record = json.loads((tmp_path / "09_fig_synthetic.json").read_text())
    (tmp_path / "09_fig_synthetic.json").write_text(json.dumps({**record, "git_commit": "abc+dirty",
                                                                "clean_commit": False}))
    assert viz.check_outputs(tmp_path, **expected) == [
        "09_fig_synthetic.png: missing", "09_tab_synthetic.md: empty", "09_tab_synthetic.json: no profile"]
    assert viz.check_outputs(tmp_path, **expected, clean=True)[1] == (
        "09_fig_synthetic.json: made at abc+dirty, not a clean commit")

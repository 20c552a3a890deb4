"""The study page in real headless Chromium (Debian's package, `make browser`), driven by Playwright: answer by
clicking and by keys, reload mid-study, export the CSV and read it back with the analysis.

Skipped only where Chromium or Playwright is missing AND this is not CI (CI=true): in CI a missing browser fails.
Set TURING_SCREENSHOT=/some/file.png to keep a screenshot of the page mid-study.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dermgan import turing as T

CHROMIUM = Path("/usr/bin/chromium")
# Never `playwright install`: the system Chromium, with nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CLASSES = ("nevus", "acne", "eczema", "melanoma")


def _require_browser():
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (run `make browser`)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install -r requirements.txt)"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests must run in CI: {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def study_files(tmp_path):
    rng = np.random.default_rng(5)
    n, size = 24, 32
    condition = rng.integers(0, len(CLASSES), n)
    tone = rng.integers(1, 7, n)
    real = T.ImagePool(rng.integers(60, 200, (n, size, size, 3), dtype=np.uint8), condition, tone, np.arange(n))
    fakes = {name: T.ImagePool(rng.integers(60, 200, (n, size, size, 3), dtype=np.uint8), condition, tone,
                               np.arange(n)) for name in ("alpha", "beta")}
    study = T.design_study(real, fakes, CLASSES, n_per_model=2, seed=0)
    page, manifest = T.write_study(study, tmp_path / "study")
    return page, T.load_study(manifest)


def plan_for(study):
    """What the test rater answers per item: alternating right and wrong, every confidence, every condition."""
    plan = {}
    for k, item in enumerate(study["items"]):
        wrong = "real" if item["truth"] == "synthetic" else "synthetic"
        plan[item["id"]] = (item["truth"] if k % 2 == 0 else wrong, (k % 3) + 1, CLASSES[k % len(CLASSES)])
    return plan


def answer_by_clicking(page, answer, confidence, condition):
    page.click(f'#answer-choices button[data-answer="{answer}"]')
    page.click(f'#confidence-choices button[data-confidence="{confidence}"]')
    page.click(f'#condition-choices button[data-condition="{condition}"]')


def answer_by_keys(page, answer, confidence, condition):
    page.keyboard.press("r" if answer == "real" else "s")
    page.keyboard.press(str(confidence))
    page.keyboard.press("abcd"[CLASSES.index(condition)])


def chosen(page):
    """(answer, confidence, condition) highlighted on screen."""
    def value(selector, attribute):
        buttons = page.locator(f"{selector} button.chosen")
        return buttons.first.get_attribute(attribute) if buttons.count() == 1 else None

    return (value("#answer-choices", "data-answer"), value("#confidence-choices", "data-confidence"),
            value("#condition-choices", "data-condition"))


def export(page, target: Path) -> Path:
    with page.expect_download() as download:
        page.click("#export")
    assert download.value.suggested_filename.startswith("turing_") and download.value.suggested_filename.endswith(
        ".csv")
    download.value.save_as(target)
    return target


def test_rate_reload_export_and_analyse(browser, study_files, tmp_path):
    from playwright.sync_api import expect  # retries until the page shows it (a loaded machine is slow)

    page_path, study = study_files
    items = study["items"]
    plan = plan_for(study)
    context = browser.new_context(viewport={"width": 1000, "height": 760}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_path.as_uri())
    assert page.locator("#n-items").inner_text() == str(len(items))

    page.fill("#rater", "bad id!")
    page.click("#start-button")
    assert "rater id" in page.locator("#start-error").inner_text()  # refused: not a valid id
    page.fill("#rater", "rater-1")
    page.keyboard.press("Enter")
    assert page.locator("#rater-shown").inner_text() == "rater-1"

    # item 1 by clicking; Next stays disabled until all three questions are answered
    first = items[0]["id"]
    assert page.locator("#image").get_attribute("data-item-id") == first
    page.click(f'#answer-choices button[data-answer="{plan[first][0]}"]')
    assert page.locator("#next").is_disabled()
    page.keyboard.press("Enter")
    assert page.locator("#image").get_attribute("data-item-id") == first  # Enter did not skip the item
    answer_by_clicking(page, *plan[first])
    page.click("#next")

    # items 2..4 by keys alone
    for item in items[1:4]:
        assert page.locator("#image").get_attribute("data-item-id") == item["id"]
        answer_by_keys(page, *plan[item["id"]])
        page.keyboard.press("Enter")

    # item 5 two-thirds answered, then a reload: position, rater and answers survive
    fifth = items[4]["id"]
    page.keyboard.press("r" if plan[fifth][0] == "real" else "s")
    page.keyboard.press(str(plan[fifth][1]))
    if os.environ.get("TURING_SCREENSHOT"):
        page.screenshot(path=os.environ["TURING_SCREENSHOT"])
    # The answer is in localStorage before the reload (on a loaded machine the key events may still be in flight).
    page.wait_for_function("id => Object.keys(localStorage).some(k => (localStorage.getItem(k) || '').includes(id))",
                           arg=fifth)
    page.reload()
    expect(page.locator("#rater-shown")).to_have_text("rater-1")  # waits for the page's start-up script
    expect(page.locator("#image")).to_have_attribute("data-item-id", fifth)
    assert chosen(page) == (plan[fifth][0], str(plan[fifth][1]), None)
    page.keyboard.press("ArrowLeft")
    fourth = items[3]["id"]
    assert page.locator("#image").get_attribute("data-item-id") == fourth
    assert chosen(page) == (plan[fourth][0], str(plan[fourth][1]), plan[fourth][2])
    page.keyboard.press("ArrowRight")

    # a mid-study export is a partial file: refused by default, readable with allow_partial
    partial = export(page, tmp_path / "partial.csv")
    with pytest.raises(T.TuringError, match=r"rater 'rater-1' answered 4 of"):
        T.read_responses([partial], study)
    assert len(T.read_responses([partial], study, allow_partial=True)) == 4

    page.keyboard.press("abcd"[CLASSES.index(plan[fifth][2])])
    page.keyboard.press("Enter")
    for k, item in enumerate(items[5:], start=5):
        assert page.locator("#image").get_attribute("data-item-id") == item["id"]
        if k % 2:
            answer_by_clicking(page, *plan[item["id"]])
            page.click("#next")
        else:
            answer_by_keys(page, *plan[item["id"]])
            page.keyboard.press("Enter")
    assert page.locator("#done").is_visible()
    assert page.locator("#progress-text").inner_text() == f"{len(items)} of {len(items)} answered"

    csv_path = export(page, tmp_path / "rater-1.csv")
    frame = T.read_responses([csv_path], study)
    assert len(frame) == len(items)
    got = {row.item_id: (row.answer, row.confidence, row.condition) for row in frame.itertuples()}
    assert got == plan
    table = T.analyse(frame, study, n_bootstrap=50)
    row = table[(table.section == "rater") & (table.metric == "accuracy")].iloc[0]
    expected = sum(plan[i["id"]][0] == i["truth"] for i in items)
    assert (row.k, row.n) == (expected, len(items))
    assert errors == []
    context.close()


def test_answers_are_kept_per_study_and_rater(browser, study_files, tmp_path):
    """A second rater on the same browser starts empty; the first rater's answers are still there after."""
    page_path, study = study_files
    plan = plan_for(study)
    first = study["items"][0]["id"]
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(page_path.as_uri())
    page.fill("#rater", "ann")
    page.click("#start-button")
    answer_by_keys(page, *plan[first])
    page.click("#switch-rater")
    page.fill("#rater", "bob")
    page.click("#start-button")
    assert chosen(page) == (None, None, None)
    page.click("#switch-rater")
    page.fill("#rater", "ann")
    page.click("#start-button")
    assert chosen(page) == (plan[first][0], str(plan[first][1]), plan[first][2])
    # a copy of the page under another name (same study id) shares the storage of this origin
    copy = shutil.copy(page_path, tmp_path / "copy.html")
    page.goto(Path(copy).as_uri())
    assert page.locator("#rater-shown").inner_text() == "ann"
    context.close()

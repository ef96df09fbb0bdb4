"""``laminae report``: one self-contained HTML page of runs, checked as HTML and
in a real browser (Debian's headless chromium, driven by selenium).

Two short quickstart runs on the bundled MNIST sample are trained once for
the module; every figure a test checks is recomputed here from the
checkpoints with ``Model.predict`` and ``Model.predict_proba``, never read
back from the report's own code.
"""
from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import laminae
from laminae.cli import main
from laminae.errors import PluginError
from laminae.network.spec import read_toml
from laminae.registry import make_registry
from laminae.training.splits import class_names

pytest.importorskip("matplotlib")
markupsafe = pytest.importorskip("markupsafe")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models.toml"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
HOSTILE_MODEL = "<script>alert(1)</script>"
HOSTILE_RUN = "--><img src=x onerror=alert(1)> $x"
"""A folder name that closes an SVG comment, opens an element, and holds a lone
``$`` (which matplotlib would read as the start of mathtext)."""
ABSENT_DATASET_PLUGIN = '''\
import attrs

import laminae
from laminae.data import ImageDataset


@attrs.define
class Absent(ImageDataset):
    """A data set whose files are never there."""

    folder = "absent-data"

    def read_folder(self, folder):
        raise FileNotFoundError("no absent.npz")


@laminae.hookimpl
def register_datasets(register):
    register("absent-data", Absent)
'''


@pytest.fixture(autouse=True)
def builtin_plugins_only(monkeypatch):
    monkeypatch.setenv("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture(scope="module")
def sample():
    return make_registry(autoload=False).create("datasets", "mnist-sample").load([])


def train(run_dir: Path, sample, *, name: str = "quickstart", **train_overrides) -> Path:
    """A quickstart run (or a copy of it under another model name) written to ``run_dir``."""
    registry = make_registry(autoload=False)
    document = read_toml(MODELS)
    document["models"] = {name: document["models"]["quickstart"]}
    model = laminae.build(document, name=name, registry=registry, train_overrides=train_overrides)
    test = (sample.test.x, sample.test.y)
    model.fit(sample.train.x, sample.train.y, test_data=test, run_dir=run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample):
    """Two quickstart runs that differ in seed and length."""
    root = tmp_path_factory.mktemp("runs")
    return [train(root / "quick-a", sample, epochs=2, seed=0), train(root / "quick-b", sample, epochs=1, seed=1)]


def report(*argv) -> tuple[int, list[str], list[str]]:
    """``laminae report ARGV``: its exit status, stdout and stderr lines."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setenv("LAMINAE_DISABLE_PLUGIN_AUTOLOAD", "1")
        code = main(["report", *map(str, argv)])
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    """The report of the two runs: its path and its text."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    code, out, err = report(*runs, "--out", path)
    assert (code, err, out[-1]) == (0, [], str(path))
    return path, path.read_text(encoding="utf-8")


class ReportParser(HTMLParser):
    """What the tests read of a page: every start tag with its attributes, and for
    each run's section the confusion table's rows (lists of cell texts) and
    its mistakes (attributes and caption text)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: dict[str, dict[str, list]] = {}
        self._section: dict[str, list] | None = None
        self._in_confusion = False
        self._text: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "section" and (attributes.get("id") or "").startswith("run-"):
            self._section = self.sections.setdefault(attributes["id"], {"rows": [], "mistakes": []})
        elif tag == "table" and attributes.get("class") == "confusion":
            self._in_confusion = True
        elif tag == "tr" and self._in_confusion:
            self._section["rows"].append([])
        elif (tag in ("td", "th") and self._in_confusion) or (tag == "figcaption" and self._section):
            self._text = []
        if tag == "br" and self._text is not None:
            self._text.append(" ")
        if tag == "figure" and attributes.get("class") == "mistake":
            self._section["mistakes"].append({**attributes, "caption": ""})

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_confusion = False
        elif tag in ("td", "th") and self._text is not None and self._in_confusion:
            self._section["rows"][-1].append("".join(self._text).strip())
            self._text = None
        elif tag == "figcaption" and self._text is not None:
            if self._section["mistakes"]:
                self._section["mistakes"][-1]["caption"] = " ".join("".join(self._text).split())
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def predictions(run_dir: Path, sample) -> tuple[np.ndarray, np.ndarray]:
    model = laminae.load(run_dir)
    return model.predict(sample.test.x), model.predict_proba(sample.test.x)


def test_the_page_names_both_runs_with_their_layer_trees_and_hyperparameters(page, runs):
    _, text = page
    for index, run_dir in enumerate(runs, start=1):
        model = laminae.load(run_dir)
        assert f'<h2>{run_dir.name}</h2>' in text and f'<a href="#run-{index}">{run_dir.name}</a>' in text
        assert str(markupsafe.escape(model.network.summary())) in text
    assert "total params: 101,770 (float32)" in text
    assert "<tr><td>momentum</td><td><code>0.9</code></td></tr>" in text
    assert "<tr><td>batch_size</td><td><code>32</code></td></tr>" in text
    epochs = re.findall(r"<tr><td>epochs</td><td><code>(\d+)</code></td></tr>", text)
    assert epochs == ["2", "1"]


def test_the_confusion_matrix_is_the_checkpoints_predictions_on_the_test_split(page, runs, sample):
    sections = ReportParser(page[1]).sections
    assert list(sections) == ["run-1", "run-2"]
    for section, run_dir in zip(sections.values(), runs):
        predicted, _ = predictions(run_dir, sample)
        header, *rows = section["rows"]
        assert header == ["true \\ predicted", *map(str, range(10)), "samples", "accuracy"]
        assert [row[0] for row in rows] == [str(label) for label in range(10)]
        shown = np.array([[int(cell) for cell in row[1:11]] for row in rows])
        expected = np.zeros((10, 10), int)
        np.add.at(expected, (sample.test.y, predicted), 1)
        np.testing.assert_array_equal(shown, expected)
        assert shown.sum() == len(sample.test) == 1000
        counts = np.bincount(sample.test.y, minlength=10)
        assert [int(row[11]) for row in rows] == counts.tolist()
        per_class = [np.mean(predicted[sample.test.y == label] == label) for label in range(10)]
        assert [row[12] for row in rows] == [f"{value:.4f}" for value in per_class]
        correct = int(np.sum(predicted == sample.test.y))
        assert f"({correct}/1000) on MNIST sample" in page[1]


def test_the_mistakes_are_the_most_confident_wrong_predictions(page, runs, sample):
    sections = ReportParser(page[1]).sections
    for section, run_dir in zip(sections.values(), runs):
        predicted, probabilities = predictions(run_dir, sample)
        wrong = np.flatnonzero(predicted != sample.test.y)
        mistakes = section["mistakes"]
        assert len(mistakes) == min(24, len(wrong)) > 0
        indices = [int(m["data-index"]) for m in mistakes]
        for mistake, index in zip(mistakes, indices):
            true, guess = sample.test.y[index], predicted[index]
            assert guess != true
            assert (int(mistake["data-true"]), int(mistake["data-predicted"])) == (true, guess)
            confidence = probabilities[index, guess]
            assert mistake["caption"] == f"true {true} predicted {guess} ({confidence:.4f}) test image #{index}"
        confidences = probabilities[indices, predicted[indices]]
        assert np.all(np.diff(confidences) <= 0)
        not_shown = np.setdiff1d(wrong, indices)
        assert confidences.min() >= probabilities[not_shown, predicted[not_shown]].max()
    images = [attributes for tag, attributes in ReportParser(page[1]).tags if tag == "img"]
    assert len(images) == sum(len(section["mistakes"]) for section in sections.values())
    for attributes in images:
        assert attributes["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attributes["src"].split(",", 1)[1]).startswith(b"\x89PNG")


def test_the_page_loads_nothing_from_anywhere(page):
    _, text = page
    tags = ReportParser(text).tags
    for tag, attributes in tags:
        for name in ("src", "href", "xlink:href", "srcset", "data", "action", "poster"):
            value = attributes.get(name)
            assert value is None or value.startswith(("data:", "#")), (tag, name, value)
    assert not {tag for tag, _ in tags} & {"script", "iframe", "object", "embed", "base", "form"}
    assert [a["href"] for tag, a in tags if tag == "link"] == ["data:,"]
    policy = next(a["content"] for tag, a in tags if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert policy.startswith("default-src 'none';") and "script-src" not in policy
    # the only addresses are the SVG's XML namespaces, names that are never fetched
    assert set(re.findall(r"https?://[^\"' ]*", text)) == {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert set(re.findall(r"url\((.)", text)) <= {"#"}
    assert "@import" not in text and text.count("<svg") == 1


@pytest.fixture(scope="module")
def hostile_page(sample, tmp_path_factory):
    """The report of a run whose folder and model have hostile names."""
    root = tmp_path_factory.mktemp("hostile")
    run_dir = train(root / HOSTILE_RUN, sample, name=HOSTILE_MODEL, epochs=1)
    code, _, err = report(run_dir, "--out", root / "hostile.html", "--mistakes", "2")
    assert (code, err) == (0, [])
    return root / "hostile.html"


def test_hostile_names_are_text_not_markup(hostile_page):
    text = hostile_page.read_text()
    assert "<script" not in text.lower() and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt; $x" in text


def test_a_run_without_a_checkpoint_is_shown_with_what_is_left_out(runs, tmp_path, monkeypatch):
    partial = tmp_path / "partial"
    shutil.copytree(runs[1], partial, ignore=shutil.ignore_patterns("model.npz"))
    monkeypatch.chdir(tmp_path)
    code, out, err = report(partial)
    assert code == 0 and out[-1] == "report.html"
    assert err == [
        f"laminae report: warning: left out: {partial / 'model.npz'}: no such file,"
        " so no test-set figures (confusion matrix, mistakes)"
    ]
    text = (tmp_path / "report.html").read_text()
    assert "Left out:" in text and 'class="confusion"' not in text and "Most confident mistakes" not in text
    assert "total params: 101,770 (float32)" in text and "<svg" in text


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("empty folder", "{run}: not a run directory (it holds neither model.npz nor spec.json)"),
        ("missing folder", "{run}: not a run directory (no such folder)"),
        ("corrupt metrics", "{run}/metrics.csv: not a metrics file (expected columns epoch, train_loss,"),
        ("missing metrics", "{run}/metrics.csv: no such file (is this a run directory?)"),
        ("corrupt checkpoint", "{run}/model.npz: not a Laminae checkpoint or corrupt (File is not a zip file)"),
        ("corrupt spec", "{run}/spec.json: cannot read the spec: Expecting property name enclosed in double quotes"),
        ("oversized spec", "{run}/spec.json: larger than a spec may be (4,194,304 bytes)"),
    ],
)
def test_broken_runs_are_one_line_and_exit_2(runs, tmp_path, breakage, message):
    run = tmp_path / "run"
    if breakage == "empty folder":
        run.mkdir()
    elif breakage != "missing folder":
        shutil.copytree(runs[1], run)
    if breakage == "corrupt metrics":
        (run / "metrics.csv").write_text("epoch,loss\n1,not a number\n")
    elif breakage == "missing metrics":
        (run / "metrics.csv").unlink()
    elif breakage == "corrupt checkpoint":
        (run / "model.npz").write_bytes(b"PK\x03\x04 not a zip")
    elif breakage == "corrupt spec":
        (run / "model.npz").unlink()
        (run / "spec.json").write_text("{not json")
    elif breakage == "oversized spec":
        (run / "model.npz").unlink()
        (run / "spec.json").write_text(" " * (2**22 + 1))
    code, out, err = report(runs[0], run, "--out", tmp_path / "report.html")
    assert code == 2 and out == [] and len(err) == 1, err
    assert err[0].startswith("laminae report: error: " + message.format(run=run)), err
    assert not (tmp_path / "report.html").exists()


def test_an_out_that_is_a_folder_is_one_line_and_exit_2(runs, tmp_path):
    assert report(runs[0], "--out", tmp_path) == (
        2, [], [f"laminae report: error: {tmp_path}: is a folder, not a file to write the report to"]
    )


def test_a_data_set_not_found_is_one_line_and_exit_2(sample, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "absent.py").write_text(ABSENT_DATASET_PLUGIN)
    registry = make_registry(plugins_dir=plugins, autoload=False)
    model = laminae.from_toml(MODELS, "quickstart", registry=registry, train_overrides={"dataset": "absent-data"})
    run = tmp_path / "run"
    model.fit(sample.train.x[:64], sample.train.y[:64], epochs=1, run_dir=run, progress=False)
    code, out, err = report(run, "--plugins-dir", plugins, "--data-dir", tmp_path / "data", "--out", tmp_path / "r.html")
    assert code == 2 and out == [] and len(err) == 1, err
    assert err[0].startswith("laminae report: error: absent-data: not found (no absent.npz); looked in ")
    assert str(tmp_path / "data" / "absent-data") in err[0]


def test_without_the_report_extra_the_command_says_what_to_install(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "jinja2", None)
    assert report(runs[0]) == (2, [], ["laminae report: error: the report needs jinja2: pip install 'laminae[report]'"])


def test_fashion_mnist_names_its_classes_and_mnist_numbers_them(registry):
    assert class_names(registry, "fashion-mnist", 10) == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )
    assert class_names(registry, "mnist", 10) == tuple("0123456789")


def test_class_names_that_do_not_fit_the_classes_are_the_plugins_bug(registry):
    with pytest.raises(PluginError, match=r"data set 'fashion-mnist' .*: class_names must be a tuple of 12 strings"):
        class_names(registry, "fashion-mnist", 12)


# The browser: Debian's chromium and chromedriver, never a downloaded one.


def browser_missing(reason: str) -> None:
    """Skip on a developer's machine; fail under CI, which must run this test."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI installs it (see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        browser_missing(f"no {' or '.join(missing)}: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        browser_missing("no selenium: pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> list[dict]:
    """Load ``path`` and return the console's SEVERE messages (errors, refused loads)."""
    driver.get(path.resolve().as_uri())  # returns once the page has loaded
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_report_renders_in_chromium_without_errors(browser, page):
    path, _ = page
    assert open_page(browser, path) == []
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg, img'), e => {"
        " const box = e.getBoundingClientRect();"
        " return {tag: e.tagName.toLowerCase(), width: box.width, height: box.height,"
        " natural: e.tagName === 'IMG' ? e.naturalWidth : null}; })"
    )
    assert [f["tag"] for f in figures].count("svg") == 1 and len(figures) > 20
    for figure in figures:
        assert figure["width"] > 0 and figure["height"] > 0, figure
        assert figure["natural"] is None or figure["natural"] > 0, figure
    curves = next(f for f in figures if f["tag"] == "svg")
    assert curves["width"] > 800  # the curves fill the page's width
    page_width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert page_width[0] <= page_width[1]  # nothing needs a sideways scroll at a laptop's width
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / "report.html")
    (ARTIFACTS / "report.png").write_bytes(full_page_screenshot(browser))
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_a_hostile_name_runs_no_script_in_chromium(browser, hostile_page):
    assert open_page(browser, hostile_page) == []  # an inline script or handler the policy refused would be logged
    assert browser.execute_script("return document.querySelectorAll('script, img[src=x]').length") == 0
    assert HOSTILE_MODEL in browser.find_element("css selector", "section.run").text


def full_page_screenshot(driver) -> bytes:
    """The whole page, not just the window, as PNG bytes (Chrome's DevTools protocol)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    return base64.b64decode(shot["data"])

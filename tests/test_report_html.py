"""The rendered report pages, parsed as HTML (pure Python, no browser): self-contained, no warning or traceback,
no path of the machine that made them, a leaderboard per dataset at the top, the long tables collapsed."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report_fixture import write_leaderboard_suite

from ebmbench import report


class Tags(HTMLParser):
    """Every start tag with its attributes, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def tags(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    suite = write_leaderboard_suite(tmp_path_factory.mktemp("html") / "boards")
    for name in ("report", "likelihood", "reproduce"):
        report.render(suite, f"{name}.ipynb")
    return suite


@pytest.mark.slow
@pytest.mark.parametrize("name", ["report", "likelihood", "reproduce"])
def test_pages_are_self_contained_and_clean(rendered, name):
    html = (rendered / f"{name}.html").read_text()
    assert report.html_problems(html) == []
    assert str(rendered) not in html and str(Path.home()) + "/" not in html.replace("data:", "")
    for tag, attrs in tags(html):
        if tag in ("script", "img"):
            assert not attrs.get("src", "").startswith(("http:", "https:", "//")), attrs
        if tag == "link":
            assert not attrs.get("href", "").startswith(("http:", "https:", "//")), attrs
    assert not any("jp-OutputPrompt" in a.get("class", "") for _, a in tags(html))  # a page, not a notebook


@pytest.mark.slow
def test_report_opens_with_a_leaderboard_per_dataset_and_collapses_the_long_tables(rendered):
    html = (rendered / "report.html").read_text()
    found = tags(html)
    boards = [a["data-dataset"] for t, a in found if t == "table" and "leaderboard" in a.get("class", "")]
    assert boards == ["digits", "eight_gaussians"]
    first_table = next(a for t, a in found if t == "table")
    assert "leaderboard" in first_table.get("class", "")  # the first table of the page is a leaderboard
    assert html.index("Leaderboards") < html.index("Sample quality against sampling cost") < html.index("Appendix")
    appendix = html[html.index("Appendix"):]
    assert appendix.count("<details") >= 6 and "Sample statistics per dataset" in appendix
    assert "<strong>pcd_ebm / mala</strong> leads reverse_kl" in html  # the summaries' Markdown, rendered
    figures = [a for t, a in found if t == "figure"]
    assert figures and all("report-figure" in a.get("class", "") for a in figures)
    assert html.count("<figcaption") == len(figures) and "lower is better" in html


@pytest.mark.slow
def test_report_writes_tables_and_figures_for_papers(rendered):
    for ds in ("digits", "eight_gaussians"):
        for ext in ("csv", "tex"):
            assert (rendered / "tables" / f"leaderboard_{ds}.{ext}").stat().st_size > 200
    for name in ("quality_vs_cost", "learning_curves"):
        if name == "learning_curves":
            continue  # the fixture has no learning-curve rows
        for ext in ("png", "svg", "pdf"):
            assert (rendered / "figures" / f"{name}.{ext}").stat().st_size > 1000


def test_the_checker_finds_what_a_page_must_not_have():
    clean = '<p>fine</p><img src="data:image/png;base64,AAAA/tmp/AAAA"><style>a{}</style>'
    assert report.html_problems(clean) == []
    bad = {
        '<script src="https://cdn.example.org/require.js"></script>': "external script",
        '<link rel="stylesheet" href="//cdn.example.org/a.css">': "external link",
        '<div data-mime-type="application/vnd.jupyter.stderr">x</div>': "stderr",
        "<pre>UserWarning: something</pre>": "warning",
        "<pre>Traceback (most recent call last):</pre>": "traceback",
        "<p>rows under /home/alice/results/quick</p>": "absolute path",
        r"<p>C:\Users\alice\results</p>": "absolute path",
    }
    for page, what in bad.items():
        problems = report.html_problems(page)
        assert problems and what in " ".join(problems), (page, problems)
    assert report.redact_paths(f"not found in {Path.home()}/.cache/x and /opt/w/f.pt") == (
        "not found in ~/.cache/x and .../f.pt")

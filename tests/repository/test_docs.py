"""The documentation holds together: the README stays a front page, every relative link of
the README and docs/ leads to a file, and no page points readers to issue numbers."""
import re

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_a_front_page_of_at_most_150_lines():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150


def test_every_relative_link_leads_to_a_file():
    broken = [f"{page.relative_to(ROOT)}: {link}" for page in PAGES
              for link in re.findall(r"\]\(([^)#\s]+)[^)]*\)", page.read_text(encoding="utf-8"))
              if not link.startswith(("http://", "https://", "mailto:")) and not (page.parent / link).exists()]
    assert broken == []


def test_no_page_refers_to_issue_numbers():
    found = [f"{page.relative_to(ROOT)}: {m.group(0)}" for page in PAGES
             for m in re.finditer(r"\b[Ii]ssues? #?\d+\b|#\d{1,3}\b", page.read_text(encoding="utf-8"))]
    assert found == []


def test_the_index_names_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES[1:] if p.name != "README.md" and p.name not in index]
    assert missing == []

"""docs/walkthrough.md and its Japanese translation stay true to the code and
to each other.

A code reference is written [`db.py`](../db.py) › `get_session`: the file
must exist and define the symbol (a def, class or assignment; `Hub.deliver`
is a method of a class). A fenced block whose info string names a file,
```python db.py, quotes it: its lines must be in that file, in that order
(`...` stands for lines left out). The two walkthroughs have the same
sections, each with the same references and links, and the same quotes.
"""

import ast
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
WALKTHROUGHS = [DOCS / "walkthrough.md", DOCS / "walkthrough.ja.md"]

REFERENCE = re.compile(r"\[`([\w/]+\.py)`\]\(\.\./([\w/]+\.py)\)\s*›\s*`([A-Za-z_][\w.]*)`")
# A link's target: [text](target), not inside inline code.
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\S*)(?: (\S+))?\s*$")
HEADING = re.compile(r"^(#{1,6}) (.*)$")
SECTION_NUMBER = re.compile(r"^(\d+)\. ")
ELISION = "..."


@dataclass
class Section:
    level: int
    number: str | None  # "3" for "## 3. Start-up"
    references: set[tuple[str, str]] = field(default_factory=set)
    links: set[str] = field(default_factory=set)


@dataclass
class Quote:
    path: str
    lines: list[str]
    where: str


@dataclass
class Walkthrough:
    path: Path
    sections: list[Section]
    quotes: list[Quote]
    stray_arrows: list[str]


def parse(path: Path) -> Walkthrough:
    sections = [Section(level=0, number=None)]  # before the first heading
    quotes: list[Quote] = []
    stray: list[str] = []
    quote: Quote | None = None
    in_fence = False
    paragraph: list[str] = []

    def end_paragraph() -> None:
        # References may wrap across lines: read a paragraph at a time.
        text = " ".join(paragraph)
        paragraph.clear()
        for file, target, symbol in REFERENCE.findall(text):
            if file != target:
                stray.append(f"{file} links to {target}")
            sections[-1].references.add((file, symbol))
        if text.count("›") != len(REFERENCE.findall(text)):
            stray.append(text)
        for target in LINK.findall(re.sub(r"`[^`]*`", "``", text)):
            if not target.startswith(("http://", "https://", "mailto:")):
                sections[-1].links.add(target)

    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence and not in_fence:
            end_paragraph()
            in_fence = True
            if fence.group(2):
                quote = Quote(fence.group(2), [], f"{path.name}:{number}")
            continue
        if in_fence:
            if line.startswith("```"):
                in_fence = False
                if quote is not None:
                    quotes.append(quote)
                quote = None
            elif quote is not None:
                quote.lines.append(line)
            continue
        heading = HEADING.match(line)
        if heading:
            end_paragraph()
            numbered = SECTION_NUMBER.match(heading.group(2))
            sections.append(Section(len(heading.group(1)), numbered and numbered.group(1)))
            continue
        if line.strip():
            paragraph.append(line.strip())
        else:
            end_paragraph()
    end_paragraph()
    assert not in_fence, f"{path.name}: a code block is never closed"
    return Walkthrough(path, sections, quotes, stray)


@cache
def definitions(file: str) -> dict[str, ast.AST]:
    """Every name a module defines at its top level, and within its classes
    and functions as `Outer.name`."""
    tree = ast.parse((ROOT / file).read_text())
    found: dict[str, ast.AST] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            for name in names:
                found[prefix + name] = node
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return found


@pytest.fixture(scope="module", params=WALKTHROUGHS, ids=lambda p: p.name)
def walkthrough(request: pytest.FixtureRequest) -> Walkthrough:
    return parse(request.param)


def test_walkthrough_references_name_code_that_exists(walkthrough: Walkthrough) -> None:
    references = {ref for section in walkthrough.sections for ref in section.references}
    assert len(references) > 30  # the parser found them: a test that cannot pass vacuously
    missing = [
        f"{file} › {symbol}"
        for file, symbol in sorted(references)
        if not (ROOT / file).is_file() or symbol not in definitions(file)
    ]
    assert missing == []


def test_walkthrough_has_no_malformed_reference(walkthrough: Walkthrough) -> None:
    # A `›` outside the reference form would be a reference nobody checks.
    assert walkthrough.stray_arrows == []


def test_walkthrough_links_resolve(walkthrough: Walkthrough) -> None:
    broken = []
    for target in {link for section in walkthrough.sections for link in section.links}:
        path, _, anchor = target.partition("#")
        file = (walkthrough.path.parent / path).resolve() if path else walkthrough.path
        if not file.exists():
            broken.append(target)
        elif anchor and anchor not in anchors(file):
            broken.append(target)
    assert broken == []


def test_walkthrough_quotes_are_in_the_code(walkthrough: Walkthrough) -> None:
    assert len(walkthrough.quotes) >= 5
    for quote in walkthrough.quotes:
        code = [line.strip() for line in (ROOT / quote.path).read_text().splitlines()]
        position = 0
        for line in quote.lines:
            wanted = line.strip()
            if not wanted or wanted == ELISION:
                continue
            try:
                position = code.index(wanted, position) + 1
            except ValueError:
                pytest.fail(f"{quote.where}: not in {quote.path} (in this order): {wanted!r}")


def test_translation_kept_in_step() -> None:
    english, japanese = (parse(path) for path in WALKTHROUGHS)
    other = {"walkthrough.md", "walkthrough.ja.md"}  # each links to the other

    def outline(w: Walkthrough) -> list[tuple[int, str | None, set[tuple[str, str]], set[str]]]:
        return [(s.level, s.number, s.references, s.links - other) for s in w.sections]

    assert len(english.sections) == len(japanese.sections)
    for mine, theirs in zip(outline(english), outline(japanese), strict=True):
        assert mine == theirs
    assert [(q.path, q.lines) for q in english.quotes] == [
        (q.path, q.lines) for q in japanese.quotes
    ]


def anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        heading = HEADING.match(line)
        if in_fence or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(2).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)

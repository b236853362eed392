"""README.md and docs/*.md: every relative link reaches a file, and every
`#anchor` a heading in it; the README stays a front door (under 16 KB, with
`make run`, `make demo` and `make test` each in a code block of its own)."""

import re
from pathlib import Path

import pytest

from tests.test_walkthrough import anchors

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = "```"


def split(markdown: Path) -> tuple[list[str], list[list[str]]]:
    """The paragraphs outside code blocks, and the lines of each code block."""
    paragraphs: list[str] = []
    blocks: list[list[str]] = []
    lines: list[str] = []
    block: list[str] | None = None
    for line in markdown.read_text().splitlines():
        if block is not None:
            if line.startswith(FENCE):
                blocks.append(block)
                block = None
            else:
                block.append(line)
        elif line.startswith(FENCE):
            block = []
        elif line.strip():
            lines.append(line)
            continue
        if lines:
            paragraphs.append("\n".join(lines))
            lines = []
    assert block is None, f"{markdown.name}: a code block is never closed"
    if lines:
        paragraphs.append("\n".join(lines))
    return paragraphs, blocks


def links(markdown: Path) -> set[str]:
    """Relative link targets, not counting those inside code."""
    found = set()
    for paragraph in split(markdown)[0]:
        for target in LINK.findall(re.sub(r"`[^`]*`", "``", paragraph)):
            if not target.startswith(("http://", "https://", "mailto:")):
                found.add(target)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path) -> None:
    broken = []
    for target in sorted(links(page)):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{target}: no such heading")
    assert broken == []


def test_the_pages_have_links() -> None:
    # The parser finds them: a test that cannot pass vacuously.
    assert len(links(README)) >= 10
    assert all(links(page) for page in PAGES)


def test_readme_is_a_front_door() -> None:
    assert len(README.read_bytes()) < 16 * 1024


@pytest.mark.parametrize("command", ["make run", "make demo", "make test"])
def test_readme_has_the_command_in_a_block_of_its_own(command: str) -> None:
    def commands(block: list[str]) -> list[str]:
        return [line.partition("#")[0].strip() for line in block if line.partition("#")[0].strip()]

    assert [command] in [commands(block) for block in split(README)[1]]

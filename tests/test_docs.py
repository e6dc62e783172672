"""The repository stands alone: no .py or .md file cites the project notes that live outside it, and every
`docs/paper-recipe.md#<anchor>` cited anywhere resolves to a heading of that file (GitHub's anchor slugs)."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "docs/paper-recipe.md"
# The outside notes, spelled in pieces so that this file does not cite them itself.
OUTSIDE_NOTES = ("PAPER", "ANCHORS", "DESIGN", "ARCH_REVIEW", "GPU_REVIEW")
OUTSIDE_RE = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(OUTSIDE_NOTES) + r")\.md\b")
CITATION_RE = re.compile(re.escape(RECIPE) + r"#([A-Za-z0-9_-]+)")
LOCAL_LINK_RE = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")  # [text](#anchor) inside the recipe itself


def source_files() -> list[Path]:
    """The .py and .md files of the repository: tracked or about to be (git), else every file outside .git."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        names = out.splitlines()
    except (OSError, subprocess.CalledProcessError):  # no git, or not a checkout
        names = []
        for folder, dirs, files in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d != ".git"]
            names += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files]
    return [ROOT / n for n in names if n.endswith((".py", ".md")) and (ROOT / n).is_file()]


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    """Anchors of the ATX headings outside fenced code; repeated headings get -1, -2, ... as on GitHub."""
    anchors, seen, fenced = set(), {}, False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not fenced:
            slug = github_slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_github_slug():
    assert github_slug("Where we differ from the authors' code") == "where-we-differ-from-the-authors-code"
    assert github_slug("Fine-tuning data") == "fine-tuning-data"
    assert github_slug("Special-token ids") == "special-token-ids"
    assert heading_anchors("# A\n## B c\n```\n# not a heading\n```\n## B c\n") == {"a", "b-c", "b-c-1"}


def test_no_citation_of_outside_notes():
    offenders = []
    for path in source_files():
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE_RE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "cites a note outside the repository (cite docs/paper-recipe.md instead):\n" + \
        "\n".join(offenders)


def test_recipe_citations_resolve():
    recipe = ROOT / RECIPE
    text = recipe.read_text(encoding="utf-8")
    anchors = heading_anchors(text)
    cited = {}
    for path in source_files():
        body = path.read_text(encoding="utf-8", errors="replace")
        found = CITATION_RE.findall(body) + (LOCAL_LINK_RE.findall(body) if path == recipe else [])
        for anchor in found:
            cited.setdefault(anchor, []).append(str(path.relative_to(ROOT)))
    assert cited, f"no file cites {RECIPE}#..."
    broken = {a: sorted(set(files)) for a, files in cited.items() if a not in anchors}
    assert not broken, f"anchors cited but not headings of {RECIPE} ({sorted(anchors)}): {broken}"

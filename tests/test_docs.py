"""What a reader looks for first resolves: each script's first line says what it is and links a README section that
exists, `--help` says it too, and no file of the repository points at documents a reader does not have."""

import re
import subprocess
import sys

import pytest

from conftest import EVERY_SCRIPT, ROOT, short


def readme_anchors() -> set:
    """GitHub's anchors of the README's headings: lower case, punctuation but - and _ dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", (ROOT / "README.md").read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("script", EVERY_SCRIPT, ids=short)
def test_the_first_line_and_help_say_what_the_script_is_and_link_its_readme_section(script):
    first_line = (ROOT / script).read_text().splitlines()[0]
    anchor = re.search(r"README\.md#([\w\-]+)", first_line)
    assert first_line.startswith('"""PPO') and anchor, first_line
    assert anchor.group(1) in readme_anchors(), f"{script} links README.md#{anchor.group(1)}, which is no heading"
    help_text = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True).stdout
    assert first_line.strip('"').split(". ")[0] in " ".join(help_text.split())


def test_no_pointer_leads_outside_the_repository():
    files = [*ROOT.glob("*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmark/*.py"), *ROOT.glob("benchmark/*.sh")]
    files.append(ROOT / "README.md")
    # Written as escapes and joined, so this file does not match itself: the section sign, and the names of the design
    # notes and reference summaries the scripts were written from, which are not in the repository
    pointers = ["\N{SECTION SIGN}", "S" "PEC\\b", "snd" "_reference", "paper" "_results", "\\.\\./" "shared"]
    pattern = re.compile("|".join(pointers))
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"pointers to documents users do not have: {found}"


def test_the_repository_has_a_license_and_the_readme_a_citation():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    readme = (ROOT / "README.md").read_text()
    assert "arxiv.org/abs/2302.11563" in readme and "@article{" in readme and "github.com/Iskandor/SND" in readme

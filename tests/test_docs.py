"""The documentation: the README's snippet runs as written, the config key page is up to date, and the docs
build as a site with `mkdocs build --strict` (a broken link or a missing page fails)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_snippet_runs(capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has no Python snippet"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.count("\n") == 3 and ("expert" in out or "learning" in out)


def test_readme_is_short_with_install_first():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 210
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections[0] == "Install", sections


def test_config_page_is_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_keys.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "method" / "index.html").is_file()


def test_readme_links_point_inside_the_repository():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path = target.split("#")[0]
        assert (ROOT / path).exists(), target

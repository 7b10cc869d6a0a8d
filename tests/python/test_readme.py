"""The README's Python example runs as written (in a scratch directory holding the key and the
registry the README's shell lines make, and a link to test-models/)."""

import os
import re
import subprocess
import sys

from conftest import ROOT, hm


def test_readme_python_example_runs_as_written(tmp_path, models):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- python-example[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert m, "README.md has no python-example block"
    (tmp_path / "example.py").write_text(m.group(1), encoding="utf-8")
    os.symlink(ROOT / "test-models", tmp_path / "test-models")
    hm("wm-key", "--scheme", "gumbel", "--tokenizer", models["smollm2"], "--out", tmp_path / "chat.wmkey")
    hm("register", tmp_path / "chat.wmkey", "--registry", tmp_path / "py-keys")
    p = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2, p.stdout
    assert lines[0].startswith("match "), lines
    assert lines[1].startswith("undecided None"), lines

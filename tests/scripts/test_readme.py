"""Every command in the READMEs' shell blocks names scripts and flags that exist."""
import os
import re

import pytest

from src.model_utils.config import load_config
from helpers import ROOT

KEYS = set(load_config([]).to_dict())
# Flags of scripts that take their own arguments rather than the config's.
OWN_FLAGS = {"make_demo_data.py": {"out_dir", "seed", "n_src", "sample_rate", "sizes", "min_seconds",
                               "max_seconds", "noisy", "cross_gender"},
             "separate_onnx.py": {"output_dir", "chunk_seconds", "overlap_seconds", "threads"}}


def shell_commands(readme):
    text = open(os.path.join(ROOT, readme), encoding="utf-8").read()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


@pytest.mark.parametrize("readme", ["README.md", "README_CN.md"])
def test_readme_commands_name_existing_scripts_and_flags(readme):
    commands = shell_commands(readme)
    assert any("bash scripts/run_tests.sh" in c for c in commands)
    assert any("bash scripts/run_demo.sh" in c for c in commands)
    checked = 0
    for command in commands:
        words = command.split()
        for i, word in enumerate(words):
            if word.startswith("scripts/") or (word.endswith(".py") and words[i - 1] == "python"):
                assert os.path.isfile(os.path.join(ROOT, word)), f"{readme}: {command}"
                checked += 1
        if "python" in words:
            target = words[words.index("python") + 1]
            allowed = OWN_FLAGS.get(target, KEYS | {"config_path", "help"})
            for flag in re.findall(r"--(\w+)", command):
                assert flag in allowed, f"{readme}: unknown flag --{flag} in: {command}"
    assert checked >= 15


def test_readme_shell_block_check_can_fail(tmp_path, monkeypatch):
    fake = tmp_path / "README.md"
    fake.write_text("```bash\npython train.py --no_such_flag=1\n```\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", str(tmp_path))
    commands = shell_commands("README.md")
    assert commands == ["python train.py --no_such_flag=1"]
    assert "no_such_flag" not in KEYS

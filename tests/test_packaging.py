"""A wheel of the project carries every module and the model-card templates, so `hf-kd push` works outside a
checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_every_module_and_the_card_templates(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("hf_kd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "hf_kd").rglob("*.py") if "model_cards" not in p.parts}
    assert modules - names == set()
    templates = {f"hf_kd/model_cards/{p.name}" for p in (ROOT / "model_cards").glob("*.md")}
    assert {"hf_kd/model_cards/bert_dot.md", "hf_kd/model_cards/teacher_scores.md"} <= templates
    assert templates - names == set()

"""The reports checked in under docs/ name no folder of the machine that made them.

Why a test: a report made from an absolute path prints it in every cell's `data-run`, the subtitle and
runs.csv (`paths.output_dir`, `logger.dir`); made in the project root from `outputs/multirun/<name>`, it
prints relative ones (`analysis.runs.paths_as_given`). This catches a page drawn the wrong way before it lands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
REPORTS = sorted(index.parent for index in DOCS.glob("*/index.html"))
# An absolute folder of a Unix machine: not preceded by a word character or a dot, so URLs do not count.
MACHINE_FOLDER = re.compile(r"(?<![\w.])/(?:tmp|work|home|root|Users|private|mnt|var|opt|scratch)/[^\s\"'<,;]*")


def test_the_docs_hold_reports():
    assert REPORTS, f"no */index.html under {DOCS}"


@pytest.mark.parametrize("folder", REPORTS, ids=lambda folder: folder.name)
def test_a_checked_in_report_names_no_folder_of_its_machine(folder):
    for name in ("index.html", "runs.csv"):
        text = (folder / name).read_text(encoding="utf-8")
        found = sorted(set(MACHINE_FOLDER.findall(text)))
        assert not found, f"docs/{folder.name}/{name} names {len(found)} machine folders, e.g. {found[:3]}"


def test_the_pattern_finds_a_machine_folder_and_spares_relative_ones_and_urls():
    assert MACHINE_FOLDER.findall('data-run="/tmp/x/outputs/multirun/a/job"') == ["/tmp/x/outputs/multirun/a/job"]
    assert MACHINE_FOLDER.findall("root_dir,/work/main,") == ["/work/main"]
    assert not MACHINE_FOLDER.findall('data-run="outputs/multirun/a/job" href="https://example.org/home/x"')

"""The workflow reads in include order: no rules file uses a name that only a later file defines
(tests/workflow_order.py compiles each file with Snakemake's own parser)."""

from __future__ import annotations

from pathlib import Path

from workflow_order import forward_references

REPO = Path(__file__).resolve().parents[1]


def test_no_rules_file_uses_a_name_defined_in_a_later_file():
    assert forward_references(REPO) == []


def test_a_forward_reference_is_found_inside_a_function_and_in_a_rule(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "Snakefile").write_text('include: "rules/common.smk"\ninclude: "rules/late.smk"\n')
    (tmp_path / "rules" / "common.smk").write_text(
        "def targets():\n    return [LATE_TARGET]\n\n\n"
        "rule early:\n    output:\n        late_path()\n    shell:\n        'touch {output}'\n"
    )
    (tmp_path / "rules" / "late.smk").write_text(
        "LATE_TARGET = 'x'\n\n\ndef late_path():\n    return 'y'\n"
    )
    assert forward_references(tmp_path) == [
        "rules/common.smk: LATE_TARGET (defined in rules/late.smk)",
        "rules/common.smk: late_path (defined in rules/late.smk)",
    ]

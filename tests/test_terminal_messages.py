"""One clear line on the terminal (issue 24): a config file that is not YAML is named with its line
and column, by Snakemake and by `settings --show`; the invalid-config message lists the config files
in the order they apply; a failed stage's own `error: ...` line reaches Snakemake's output."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Workdir, snakemake_env

from amber_repro.config.load import read_yaml
from amber_repro.errors import ConfigError

pytestmark = pytest.mark.integration  # runs Snakemake itself

# An unclosed flow mapping: the parser finds the problem at the end of the file.
BROKEN = "preset: embedded\ndpo: {beta: 0.2\n"
PROBLEM = (
    "line 3, column 1: not valid YAML: expected ',' or '}', but got '<stream end>' "
    "(while parsing a flow mapping at line 2, column 6)"
)


@pytest.mark.parametrize(
    "text, problem",
    [
        (BROKEN, PROBLEM),
        (
            "dpo:\n\tbeta: 0.2\n",
            "line 2, column 1: not valid YAML: found character '\\t' that cannot start any token "
            "(while scanning for the next token)",
        ),
        ("- dpo\n- sft\n", "a config file holds keys at the top level, not a list"),
    ],
)
def test_read_yaml_names_the_file_and_where_the_problem_is(tmp_path: Path, text, problem):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        read_yaml(path)
    separator = ", " if problem.startswith("line") else ": "
    assert str(raised.value) == f"{path}{separator}{problem}"


def test_read_yaml_of_an_empty_file_is_no_keys(tmp_path: Path):
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n")
    assert read_yaml(path) == {}


def test_settings_show_names_file_line_and_column_in_one_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    done = subprocess.run(
        [sys.executable, "-m", "amber_repro", "settings", "--show", str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr == f"error: {path}, {PROBLEM}\n"


def test_snakemake_names_the_config_file_line_and_column(workdir: Workdir):
    (workdir.path / "config" / "config.yaml").write_text(BROKEN)
    result = workdir.snakemake("-n", check=False)
    terminal = result.stdout + result.stderr  # a dry run logs to stdout
    assert result.returncode == 1
    assert f"config/config.yaml, {PROBLEM}" in terminal.splitlines(), terminal
    assert "not valid JSON or YAML" not in terminal


def test_the_invalid_config_message_lists_the_files_in_the_order_they_apply(workdir: Workdir):
    (workdir.path / "first.yaml").write_text("dpo: {beta: -1}\n")
    (workdir.path / "second.yaml").write_text("dpo: {lr: -1}\n")
    result = workdir.snakemake("-n", "--configfile", "first.yaml", "second.yaml", check=False)
    terminal = result.stdout + result.stderr
    assert result.returncode == 1
    files = "config/config.yaml, first.yaml, second.yaml"
    assert f"invalid config (files: {files}):" in terminal.splitlines(), terminal


def make_run_command() -> list[str]:
    """The Snakemake command line of `make run` (its recipe, as `make -n` prints it)."""
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(REPO), "run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [line] = [line for line in printed.splitlines() if line.startswith("snakemake ")]
    return shlex.split(line)


def test_make_run_shows_a_failed_stage_s_error_line_on_the_terminal(tmp_path: Path):
    """One raw row per split gives no safe/unsafe pair: filter_pairs stops with its own line,
    which it writes to its log; Snakemake must show it too."""
    copy = Workdir(tmp_path, whole_workflow=True)
    config = copy.path / "config" / "config.yaml"
    config.write_text(config.read_text() + "data:\n  synthetic: {train_rows: 1, test_rows: 1}\n")
    result = subprocess.run(
        make_run_command(), cwd=copy.path, env=snakemake_env(), capture_output=True, text=True
    )
    assert result.returncode == 1
    terminal = (result.stdout + result.stderr).splitlines()
    errors = [line for line in terminal if line.startswith("error: ")]
    assert len(errors) == 1, "\n".join(terminal)
    assert "kept 0 pairs and 0 SFT targets of 1 rows" in errors[0]
    assert "a pair needs one safe and one unsafe response" in errors[0]

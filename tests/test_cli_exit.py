"""The command line's exit without interpreter teardown (amber_repro.__main__): it keeps the exit
code, buffered output, atexit work and running threads' work that a normal exit keeps."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from processes import run as run_command


def run(code: str) -> subprocess.CompletedProcess:
    return run_command([sys.executable, "-c", textwrap.dedent(code)])


def test_the_exit_code_buffered_output_and_atexit_handlers_survive():
    # Output to a pipe is block-buffered: without a flush, os._exit would drop it.
    done = run(
        """
        import atexit, sys
        from amber_repro.__main__ import exit_without_teardown
        atexit.register(lambda: print("atexit handler ran"))
        print("buffered line", end="")
        print("to stderr", file=sys.stderr, end="")
        exit_without_teardown(3)
        print("never")
        """
    )
    assert done.returncode == 3
    assert done.stdout == "buffered lineatexit handler ran\n"
    assert done.stderr == "to stderr"


def test_a_running_non_daemon_thread_is_waited_for(tmp_path: Path):
    marker = tmp_path / "written"
    done = run(
        f"""
        import threading, time
        from pathlib import Path
        from amber_repro.__main__ import exit_without_teardown
        def work():
            time.sleep(0.5)
            Path({str(marker)!r}).write_text("done")
        threading.Thread(target=work).start()
        exit_without_teardown(0)
        """
    )
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "done"


def test_a_stage_run_from_the_command_line_keeps_its_error_code_and_message(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "amber_repro", "sweep", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "usage:" in done.stdout
    missing = tmp_path / "source.json"
    done = subprocess.run(
        [sys.executable, "-m", "amber_repro", "filter", "--raw", str(tmp_path / "train.parquet"),
         "--source", str(missing), "--out-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"error: {missing}: file not found (the raw data's provenance record)\n"


def test_the_collector_resumes_after_the_imports_with_the_imported_heap_frozen():
    done = run(
        """
        import gc
        from amber_repro.__main__ import collect_after_imports
        gc.disable()
        import polars  # stands for the stage's imports
        collect_after_imports()
        print(gc.isenabled(), gc.get_freeze_count() > 10_000, gc.get_threshold()[0])
        """
    )
    assert done.stdout.split() == ["True", "True", "5000"], done.stderr


def test_main_calls_the_import_hook_after_the_stage_module_and_before_the_stage(
    tmp_path: Path, capsys, monkeypatch
):
    import sys as system

    from amber_repro.__main__ import main

    # Not imported yet (as in a fresh process); the module as it was is put back afterwards.
    monkeypatch.delitem(system.modules, "amber_repro.data.filtering", raising=False)
    seen = []

    def hook():
        seen.append(("amber_repro.data.filtering" in system.modules, capsys.readouterr().err))

    source = tmp_path / "source.json"
    argv = ["filter", "--raw", str(tmp_path / "train.parquet"), "--source", str(source)]
    assert main([*argv, "--out-dir", str(tmp_path / "out")], on_imported=hook) == 2
    assert seen == [(True, "")]  # the stage's module imported, the stage not run yet
    assert f"{source}: file not found" in capsys.readouterr().err  # then it ran

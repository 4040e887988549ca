"""Import paths a user meets: the 0.1 module names still work (with a warning naming the new
one), and looking a name up loads the built-in catalog, so a fresh process needs no setup call.

Each case runs in a fresh interpreter: the test session itself has the catalog loaded already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_0_1_import_paths_still_work_and_say_where_the_names_went():
    done = run_fresh(
        """
        from generalist.mixture import MIXTURES, Mixture
        from generalist.records import DATASETS, Record
        from generalist.stream import build_stream
        from generalist.task import TASKS, Task, classification_parts
        import generalist.catalog, generalist.mixing.stream
        assert Task is generalist.catalog.Task and MIXTURES is generalist.catalog.MIXTURES
        assert build_stream is generalist.mixing.stream.build_stream
        print(len(TASKS.names()) > 20, "demo" in MIXTURES)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
    for old, new in [("task", "catalog"), ("mixture", "catalog"), ("stream", "mixing.stream")]:
        assert f"`generalist.{old}` is `generalist.{new}` since generalist 0.2" in done.stderr


def test_a_fresh_process_finds_the_built_in_mixture_without_loading_the_catalog(tmp_path):
    done = run_fresh(
        f"""
        from generalist.errors import DataError
        from generalist.mixing.stream import build_stream
        try:
            build_stream("demo", {str(tmp_path)!r}, "train", seed=0, batch_size=8)
        except DataError as err:
            print("DataError:", err)
        """
    )
    assert done.returncode == 0, done.stderr
    # the mixture and its tasks resolved; what is missing is the shards, and the message says so
    assert "unknown mixture" not in done.stdout + done.stderr
    assert "DataError: mixture 'demo', task 'easy_vqa'" in done.stdout
    assert "generalist shard easy_vqa" in done.stdout

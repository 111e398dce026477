"""``python -m fastgd bench --serve``, ``--widths`` and the ``narrow`` workload, each run tiny in a
subprocess: the tables have their rows and columns, every figure is a positive number, and
``--json`` records them. No timing is asserted here (the targets are the bench's to report)."""

import json
import re
import subprocess
import sys

import pytest

from fastgd.bench import serve as serve_module
from fastgd.bench import widths as widths_module
from fastgd.bench.results import read_results
from fastgd.bench.workloads import WORKLOADS

TIMEOUT = 240


def _run(args, cwd, code=None):
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "fastgd", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _table(text, first_column):
    """The table's data lines: those after the dashes that start with one of ``first_column``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line and set(line) == {"-"})
    return [line.split() for line in lines[start + 1 :] if line.split() and line.split()[0] in first_column]


def test_the_help_lists_the_new_workloads():
    text = _run(["bench", "--help"], cwd=None)
    for option in ("--serve", "--serve-seconds", "--widths"):
        assert option in text
    assert "narrow" in text
    assert "1.5x NumPy" in text and "1.7x 1 thread" in text  # the serving targets
    assert "twice as" in text  # the width sweep's


def test_serve_prints_requests_per_second_per_variant_and_thread_count(tmp_path):
    path = tmp_path / "serve.json"
    text = _run(["bench", "--serve", "--serve-seconds", "0.2", "--repeats", "1", "--json", str(path)], cwd=tmp_path)
    assert "requests/s" in text and "vs NumPy" in text and "vs 1 thread" in text
    rows = _table(text, serve_module.VARIANTS)
    assert [(row[0], int(row[1])) for row in rows] == [("fastgd", 1), ("fastgd", 2), ("numpy", 1), ("numpy", 2)]
    for row in rows:
        rate, latency, vs_numpy = float(row[2]), float(row[3]), float(row[4].rstrip("x"))
        assert rate > 0 and latency > 0 and vs_numpy > 0
        if row[1] == "2":
            assert len(row) == 6 and float(row[5].rstrip("x")) > 0  # two threads against one
        else:
            assert len(row) == 5
    assert [float(row[4].rstrip("x")) for row in rows[2:]] == [1.0, 1.0]  # NumPy against itself
    record = read_results(path)
    assert record["kind"] == "serve"
    assert record["context"]["layer_sizes"] == [64, 256, 256, 10] and record["context"]["request_rows"] == 32
    assert [(r["variant"], r["threads"]) for r in record["rows"]] == [
        ("fastgd", 1),
        ("fastgd", 2),
        ("numpy", 1),
        ("numpy", 2),
    ]
    for row in record["rows"]:
        assert row["requests"] > 0 and row["requests_per_second"] > 0
        assert f"{row['requests_per_second']:.0f}" in text
        # Both compute the same outputs (float32 softmax probabilities).
        assert row["max_abs_difference"] < 1e-5
    assert record["rows"][1]["scaling"] > 0 and record["rows"][0]["scaling"] is None


def test_serve_counts_every_thread_s_requests():
    # Two clients on one callable: each request counted once, from both threads.
    calls = []
    count, wall = serve_module._serve(lambda X: calls.append(X) or X.sum(), [serve_module.np.ones((2, 2))] * 4, 2, 0.05)
    assert count == len(calls) > 0 and wall >= 0.05
    with pytest.raises(ValueError, match="variant"):
        serve_module.measure("torch", 1, 0.01)


_WIDTHS_CODE = """
import sys
import fastgd.bench.widths as widths
widths.DTYPES, widths.INPUTS, widths.BATCHES, widths.WIDTHS = ("float32",), (8,), (32,), (4, 8)
from fastgd.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_widths_prints_one_row_per_setting_and_a_column_per_width(tmp_path):
    # The CLI's own path, on one row of two widths (the module's defaults narrowed).
    path = tmp_path / "widths.json"
    text = _run(["bench", "--widths", "--repeats", "1", "--json", str(path)], cwd=tmp_path, code=_WIDTHS_CODE)
    header = next(line for line in text.splitlines() if line.startswith("dtype"))
    assert header.split()[:5] == ["dtype", "inputs", "batch", "w=4", "w=8"]
    rows = _table(text, ("float32", "float64"))
    assert len(rows) == 1 and rows[0][:3] == ["float32", "8", "32"]
    figures = [float(cell.rstrip("!")) for cell in rows[0][3:5]]
    assert all(value > 0 for value in figures)
    assert re.search(r"\(! : a cliff; \d+ found\)", text)
    record = read_results(path)
    assert record["kind"] == "widths" and record["context"]["outputs"] == 2
    (row,) = record["rows"]
    assert (row["dtype"], row["inputs"], row["batch"], row["widths"]) == ("float32", 8, 32, [4, 8])
    assert [round(row[f"us_w{w}"], 1) for w in (4, 8)] == figures
    assert row["us_per_step"] == {"4": row["us_w4"], "8": row["us_w8"]}
    assert isinstance(row["cliffs"], list)


def test_a_cliff_is_a_width_slower_than_twice_its_width_by_more_than_ten_percent():
    assert widths_module.cliffs({4: 9.5, 8: 9.0, 16: 20.0}) == []  # 4 is 1.06x 8: within 10 %
    found = widths_module.cliffs({4: 9.5, 8: 9.0, 16: 20.0, 32: 12.0})
    assert [(w, wider) for w, wider, _ in found] == [(16, 32)]
    assert found[0][2] == pytest.approx(20 / 12)
    assert widths_module.cliffs({8: 10.9, 16: 10.0}) == []
    assert [w for w, _, _ in widths_module.cliffs({8: 11.2, 16: 10.0})] == [8]
    assert widths_module.cliffs({8: 50.0, 32: 10.0}) == []  # only twice the width is compared
    with pytest.raises(ValueError, match="positive integers"):
        widths_module.widths(hidden=(0, 4), out=None)


def test_narrow_is_a_workload_every_library_trains_the_same():
    workload = WORKLOADS["narrow"]
    assert (workload.layer_sizes, workload.dtype, workload.optimizer, workload.batch_size) == (
        (16, 16, 16, 1),
        "float32",
        "adam",
        256,
    )
    from fastgd.bench import worker

    fast = worker.measure("fastgd", "narrow", 1)
    slow = worker.measure("fastgd-numpy", "narrow", 1)
    assert fast["us_per_step"] > 0 and slow["us_per_step"] > 0
    assert fast["final_loss"] == pytest.approx(slow["final_loss"], rel=1e-4)


def test_narrow_runs_in_the_bench_table(tmp_path):
    path = tmp_path / "narrow.json"
    text = _run(["bench", "narrow", "--repeats", "1", "--json", str(path)], cwd=tmp_path)
    rows = _table(text, ("narrow",))
    assert [row[1] for row in rows] == ["fastgd", "fastgd-numpy"]
    assert all(float(row[2]) > 0 for row in rows)
    record = read_results(path)
    assert record["context"]["workloads"]["narrow"]["layer_sizes"] == [16, 16, 16, 1]
    assert json.dumps(record)  # plain JSON


def test_the_dropout_bench_gives_a_row_per_network_and_rate():
    import io

    from fastgd.bench.userwork import dropout_cost

    printed = io.StringIO()
    rows = dropout_cost(repeats=1, out=printed, rates=(0.0, 0.5))
    assert [(row["network"].split()[0], row["dropout"]) for row in rows] == [
        ("mid", 0.0),
        ("mid", 0.5),
        ("digits", 0.0),
        ("digits", 0.5),
    ]
    assert all(row["us_per_step"] > 0 for row in rows)
    assert [row["vs_none"] for row in rows if row["dropout"] == 0.0] == [1.0, 1.0]
    assert "µs/step" in printed.getvalue()

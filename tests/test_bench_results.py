"""``python -m fastgd bench ... --json PATH``: benchmark results written as data (the docs'
performance page is drawn from such files). No timing is asserted here."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from fastgd.bench.results import FORMAT, read_results, write_results

BENCH_TIMEOUT = 300


def test_the_bench_command_writes_every_figure_of_every_row_with_its_context(tmp_path):
    path = tmp_path / "xor.json"
    done = subprocess.run(
        [sys.executable, "-m", "fastgd", "bench", "xor", "--repeats", "1", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    record = read_results(path)
    assert record["kind"] == "workloads"
    assert record["command"] == f"python -m fastgd bench xor --repeats 1 --json {path}"
    assert record["date"][:4].isdigit() and "T" in record["date"]
    assert record["machine"]["cpu"] and record["machine"]["logical_cores"] >= 1
    assert set(record["machine"]["simd"]) <= set(record["machine"]["features"])
    assert {"python", "fastgd", "numpy", "numba"} <= set(record["versions"])
    assert record["context"]["workloads"]["xor"]["layer_sizes"] == [2, 4, 1]
    # Every row the printed table shows, with every figure of it (the table is printed from them).
    labels = [row["label"] for row in record["rows"]]
    assert labels == ["fastgd", "fastgd-numpy"]
    for row in record["rows"]:
        for field in (
            "us_per_step",
            "seconds",
            "compile_seconds",
            "speedup",
            "roofline_percent",
            "final_loss",
            "version",
            "runtime",
        ):
            assert row[field] is not None, field
        assert f"{row['us_per_step']:.4g}" in done.stdout
    fastgd_row = record["rows"][0]
    assert fastgd_row["speedup"] == 1.0
    # Both backends train the same thing: the same final loss (XOR, float64).
    assert record["rows"][1]["final_loss"] == pytest.approx(fastgd_row["final_loss"], rel=1e-9)


def test_a_missing_folder_is_refused_before_the_run(tmp_path):
    missing = tmp_path / "absent" / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "fastgd", "bench", "xor", "--json", str(missing)],
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "--json" in done.stderr and "does not exist" in done.stderr
    assert "µs/step" not in done.stdout  # nothing was measured
    with pytest.raises(ValueError, match="does not exist"):
        write_results(missing, "workloads", [])


def test_any_kind_of_rows_is_written_as_plain_json(tmp_path):
    # The modes return lists of dicts or {label: figures}; NumPy numbers, tuples and
    # non-finite values must come out as plain JSON (null for NaN and infinities).
    path = tmp_path / "float64.json"
    written = write_results(
        path,
        "float64",
        {"sigmoid": (np.float64(210.9), 409.0, 1.94), "tanh": {"ratio": math.inf}},
        command=["bench", "--float64"],
        context={"threads": np.int64(1)},
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text)
    assert record == written
    assert record["format"] == FORMAT and record["kind"] == "float64"
    assert record["command"] == "python -m fastgd bench --float64"
    assert record["rows"] == [{"name": "sigmoid", "value": [210.9, 409.0, 1.94]}, {"name": "tanh", "ratio": None}]
    assert record["context"] == {"threads": 1}
    assert not list(tmp_path.glob("*.tmp-*"))  # written through a temporary file, renamed


def test_bad_arguments_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        write_results(tmp_path / "x.json", "", [])
    with pytest.raises(TypeError, match="rows"):
        write_results(tmp_path / "x.json", "workloads", 3.0)
    assert not (tmp_path / "x.json").exists()
    (tmp_path / "other.json").write_text(json.dumps({"kind": "workloads"}))
    with pytest.raises(ValueError, match="not a fastgd bench result"):
        read_results(tmp_path / "other.json")

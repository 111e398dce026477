"""The README and the documentation stay true: the README is short and its Python runs as
written, the API reference lists every public name, the files and commands the docs name exist,
and the performance page is drawn from the committed result files. (The docs build itself,
which runs every example, is a step of .ci/run: ``sphinx-build -W --keep-going``.)"""

import importlib.util
import io
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 200
# A README block may compile kernels in a fresh environment (a cold first fit takes seconds to
# tens of seconds on a small machine); no block should come near this.
BLOCK_TIMEOUT = 600
DOCS_BUILD = "sphinx-build -W --keep-going -b html docs"


def _load_extension(name):
    spec = importlib.util.spec_from_file_location(name, DOCS / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def test_the_readme_is_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the limit is {README_MAX_LINES}"


def test_the_readme_has_the_set_up_commands_and_the_docs_build():
    text = README.read_text(encoding="utf-8")
    assert "pip install -e . && python -m fastgd demo" in text
    assert 'pip install -e ".[test]" && pytest' in text
    assert DOCS_BUILD in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert DOCS_BUILD.split(" docs")[0] in ci, ".ci/run must build the docs as the README says"


@pytest.mark.parametrize("index", range(len(_python_blocks(README.read_text(encoding="utf-8")))))
def test_every_python_block_of_the_readme_runs_as_written(index, tmp_path):
    block = _python_blocks(README.read_text(encoding="utf-8"))[index]
    done = subprocess.run(
        [sys.executable, "-c", block],
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"README block {index} failed:\n{block}\n{done.stderr[-3000:]}"


def test_the_readme_has_python_blocks_to_run():
    # The parametrised test above runs nothing if the pattern stops matching the README's blocks.
    assert len(_python_blocks(README.read_text(encoding="utf-8"))) >= 2


def test_the_api_reference_lists_every_public_name():
    coverage = _load_extension("api_coverage")
    documented = coverage.documented_in_sources(DOCS / "api")
    missing = coverage.undocumented(documented)
    assert not missing, f"public names missing from docs/api/*.rst: {missing}"


def test_the_api_check_finds_a_name_that_goes_undocumented():
    coverage = _load_extension("api_coverage")
    api = coverage.public_api()
    import fastgd

    assert {f"fastgd.{name}" for name in fastgd.__all__} <= set(api)
    documented = coverage.documented_in_sources(DOCS / "api")
    # Network documented under its one path: without it, it is reported.
    assert "fastgd.Network" in coverage.undocumented(documented - {"fastgd.Network"})
    # SGD is documented as fastgd.optimizers.SGD; that documents fastgd.SGD too (the same class).
    assert "fastgd.SGD" not in documented and "fastgd.SGD" not in coverage.undocumented(documented)
    assert "fastgd.SGD" in coverage.undocumented(documented - {"fastgd.optimizers.SGD"})


def test_every_file_and_module_the_docs_name_exists():
    # A path or `python -m` module in the docs that does not exist is a stale instruction.
    pages = [*DOCS.rglob("*.rst"), *(ROOT / "examples").glob("*.py")]
    pages = [
        page
        for page in pages
        if "_build" not in page.parts and "_generated" not in page.parts and "auto_examples" not in page.parts
    ]
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    paths = set(
        re.findall(
            r"(?<![\w/.])((?:benchmarks|tests|kernels|fastgd|docs|examples|\.ci)/[\w/.-]+\.(?:py|json|toml|md|rst)"
            r"|\.ci/run)\b",
            text,
        )
    )
    assert paths, "the pattern found no paths in the docs"
    missing = sorted(path for path in paths if not (ROOT / path).exists())
    assert not missing, f"the docs name files that do not exist: {missing}"
    modules = set(re.findall(r"-m (fastgd(?:\.\w+)*)", text))
    absent = sorted(module for module in modules if importlib.util.find_spec(module) is None)
    assert not absent, f"the docs name modules that do not exist: {absent}"


def test_every_example_is_one_the_gallery_runs():
    # sphinx-gallery executes plot_*.py only, and needs a docstring title in each.
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert len(examples) >= 6
    for example in examples:
        assert example.name.startswith("plot_"), f"{example.name} would not be executed by the docs build"
        source = example.read_text(encoding="utf-8")
        assert re.match(r'"""\n[^\n]+\n=+\n', source), f"{example.name} needs a docstring with a title"
        assert "plt." in source or "plot_history" in source, f"{example.name} draws nothing"


def test_the_performance_page_is_drawn_from_every_result_file(tmp_path):
    bench_results = _load_extension("bench_results")
    from fastgd.bench.results import read_results

    files = sorted((DOCS / "performance").glob("*.json"))
    assert files, "no committed bench result"
    # Draw into a copy of the folder, so that the test writes nothing into the checkout.
    (tmp_path / "performance").mkdir()
    for path in files:
        (tmp_path / "performance" / path.name).write_bytes(path.read_bytes())
    page = bench_results.generate(tmp_path).read_text(encoding="utf-8")
    for path in files:
        record = read_results(path)
        assert record["command"] in page and record["date"] in page
        if record["kind"] == "workloads":
            assert (tmp_path / "_generated" / f"{path.stem}.png").stat().st_size > 0
            for row in record["rows"]:
                assert f"{row['us_per_step']:.4g}" in page


def test_the_generated_tables_are_valid_restructuredtext():
    # A formula's |x| once read as a substitution reference and failed the docs build: every
    # generated table must parse with no message, and keep its formulas' bars as text.
    docutils_core = pytest.importorskip("docutils.core")
    tables = _load_extension("tables")
    texts = {}
    for name, lines in tables.tables():
        messages = io.StringIO()
        document = docutils_core.publish_doctree(
            "\n".join(lines), settings_overrides={"report_level": 1, "halt_level": 5, "warning_stream": messages}
        )
        assert messages.getvalue() == "", (name, messages.getvalue())
        texts[name] = document.astext()
    assert "|x| < δ" in texts["losses.rst"]
    assert "|g| + eps" in texts["optimizers.rst"]

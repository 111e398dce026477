"""The performance page, drawn from committed bench results at build time.

Every ``docs/performance/*.json`` file (written by ``python -m fastgd bench ... --json PATH``,
never edited by hand) becomes a section of ``_generated/performance_results.rst``, newest first:
its date, the exact command, the machine and versions, a table of every row, and for the
workloads table a plot of fastgd against the peers. ``performance.rst`` includes that file.
A re-run is one command and one new file; nothing here holds a figure.
"""

from __future__ import annotations

import math
import pathlib

RESULTS = "performance"
GENERATED = "_generated"

# The workloads table: (header, row field, format).
WORKLOAD_COLUMNS = (
    ("workload", "workload", "{}"),
    ("library", "label", "{}"),
    ("version", "version", "{}"),
    ("runtime", "runtime", "{}"),
    ("µs/step", "us_per_step", "{:.4g}"),
    ("fastgd is", "speedup", "{:.2f}x"),
    ("% roofline", "roofline_percent", "{:.1f}"),
    ("compile s", "compile_seconds", "{:.2f}"),
    ("final loss", "final_loss", "{:.5g}"),
)
TITLES = {"workloads": "fastgd against its NumPy backend and the peers"}


def _cell(template, value):
    if value is None:
        return ""
    try:
        return template.format(value)
    except (TypeError, ValueError):
        return str(value)


def _list_table(headers, rows, widths=None):
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [headers, *rows]:
        lines.append(f"   * - {row[0] if row[0] != '' else ' '}")
        lines.extend(f"     - {cell if cell != '' else ' '}" for cell in row[1:])
    return lines + [""]


def _generic_table(rows):
    """Any kind of run: one column per field of its rows, in the order they first appear."""
    fields = []
    for row in rows:
        fields.extend(key for key in row if key not in fields and key != "python")
    body = [
        [_cell("{:.4g}" if isinstance(row.get(field), float) else "{}", row.get(field)) for field in fields]
        for row in rows
    ]
    return _list_table(fields, body)


def _plot_workloads(record, path):
    """µs per step of every library on each workload (log scale), fastgd's ratio written beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = record["rows"]
    workloads = list(dict.fromkeys(row["workload"] for row in rows))
    labels = list(dict.fromkeys(row["label"] for row in rows))
    colours = {label: plt.cm.tab10(index % 10) for index, label in enumerate(labels)}
    figure, axes = plt.subplots(
        1, len(workloads), figsize=(4.2 * len(workloads), 0.5 * len(labels) + 1.6), squeeze=False
    )
    for axis, workload in zip(axes[0], workloads):
        mine = [row for row in rows if row["workload"] == workload]
        names = [f"{row['label']} ({row['version']})" for row in mine]
        values = [row["us_per_step"] for row in mine]
        bars = axis.barh(range(len(mine)), values, color=[colours[row["label"]] for row in mine])
        axis.set_yticks(range(len(mine)), names, fontsize="small")
        axis.invert_yaxis()
        axis.set_xscale("log")
        axis.set_xlabel("µs per step (lower is faster)")
        axis.set_title(workload)
        for bar, row in zip(bars, mine):
            axis.annotate(
                f" {row['speedup']:.2f}x",
                (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                va="center",
                fontsize="x-small",
            )
        # Bars on a log axis start at a round power of ten below the fastest run, not at an
        # arbitrary edge, so that their lengths compare.
        axis.set_xlim(10 ** math.floor(math.log10(min(values) / 2)), max(values) * 8)
    figure.suptitle(
        f"{record['date'][:10]}, {record['machine']['cpu']}: time per step, and each over fastgd's", fontsize="medium"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _section(record, source, folder):
    kind = record["kind"]
    date = record["date"][:10]
    title = f"{TITLES.get(kind, kind)}, {date}"
    machine = record["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
    commit = record.get("fastgd_commit")
    lines = [
        title,
        "-" * len(title),
        "",
        f"Measured {record['date']} (``{source.name}``)::",
        "",
        f"    $ {record['command']}",
        "",
    ]
    lines += [
        f"- **Machine**: {machine['cpu']}, {machine['logical_cores']} logical cores ({machine['usable_cores']} "
        "usable); "
        f"SIMD: {', '.join(machine['simd']) or 'none listed'}; {machine['platform']}",
        f"- **Versions** (the measuring environment): {versions}",
    ]
    if record.get("blas"):
        lines.append(
            "- **BLAS**: "
            + "; ".join(f"{b['internal_api']} {b['version']} ({b['architecture']})" for b in record["blas"])
        )
    if commit:
        lines.append(f"- **fastgd commit**: ``{commit['sha'][:12]}``{' with local changes' if commit['dirty'] else ''}")
    rows = record["rows"]
    if kind == "workloads" and rows:
        first = rows[0]
        lines.append(
            f"- **Run**: {first['threads']} threads, best float32 GEMM {first['roofline_gflops']:.1f} GFLOP/s, "
            f"best of {first.get('repeats', '?')} interleaved rounds, one process per run"
        )
        peers = sorted({(row["label"], row["python"]) for row in rows if "@" in row["label"]})
        if peers:
            lines.append(
                "- **Peers run by other environments**: "
                + "; ".join(f"``{label}``: ``{python}``" for label, python in peers)
            )
        lines.append("")
        image = f"{source.stem}.png"
        _plot_workloads(record, folder / image)
        lines += [f".. image:: /{GENERATED}/{image}", f"   :alt: µs per step per library and workload, {date}", ""]
        body = [[_cell(template, row.get(field)) for _, field, template in WORKLOAD_COLUMNS] for row in rows]
        lines += _list_table([header for header, _, _ in WORKLOAD_COLUMNS], body)
        for row in rows:
            if row.get("test_accuracy_splits"):
                splits = ", ".join(f"{value:.4f}" for value in row["test_accuracy_splits"])
                lines += [
                    f"digits recipe (fastgd): test accuracy {row['test_accuracy']:.4f}, mean of "
                    f"{len(row['test_accuracy_splits'])} train/test splits ({splits}).",
                    "",
                ]
    else:
        lines.append("")
        lines += _generic_table(rows)
    return lines


def generate(source_folder) -> pathlib.Path:
    """Write ``_generated/performance_results.rst`` (and its plots) from ``performance/*.json``."""
    from fastgd.bench.results import read_results

    source_folder = pathlib.Path(source_folder)
    folder = source_folder / GENERATED
    folder.mkdir(exist_ok=True)
    files = sorted((source_folder / RESULTS).glob("*.json"))
    records = sorted(((read_results(path), path) for path in files), key=lambda item: item[0]["date"], reverse=True)
    lines = []
    if not records:
        lines = ["No result file is committed yet (``docs/performance/*.json``).", ""]
    for record, path in records:
        lines += _section(record, path, folder)
    target = folder / "performance_results.rst"
    text = "\n".join(lines) + "\n"
    if not target.exists() or target.read_text(encoding="utf-8") != text:  # unchanged: no rebuild of the page
        target.write_text(text, encoding="utf-8")
    return target


def _generate(app):
    generate(app.srcdir)


def setup(app):
    app.connect("builder-inited", _generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

"""Sphinx configuration of fastgd's documentation.

Build (from the repository root, after ``pip install -e ".[docs]"``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The build runs every example in ``examples/`` (sphinx-gallery) and draws the performance page
from the committed bench results in ``docs/performance/*.json`` (``_ext/bench_results.py``).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

import fastgd  # noqa: E402  (the installed package: the API reference documents what users import)

project = "fastgd"
author = "the fastgd developers"
copyright = "the fastgd developers"  # noqa: A001 (Sphinx's name)
version = release = fastgd.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "bench_results",
    "api_coverage",
    "tables",
]

exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "auto_examples/*.py",
    "auto_examples/*.ipynb",
    "auto_examples/*.zip",
]
templates_path = []

# --------------------------------------------------------------------------- API reference
# No default members: each page names what it documents (with a default, Sphinx 9 ignores a
# directive's own :members: list and documents scikit-learn's generated set_*_request methods).
autodoc_default_options = {}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
autosummary_generate = False  # the API pages are written by hand (api/*.rst), one section per name
numpydoc_show_class_members = False  # members are documented by autodoc's :members:, once
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# --------------------------------------------------------------------------- examples
sphinx_gallery_conf = {
    "examples_dirs": os.path.join(HERE, "..", "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every example is executed
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    # an example that raises fails the build (the default): every example must run and draw.
    "only_warn_on_example_error": False,
    "show_memory": False,
    "plot_gallery": "True",
}

# Examples draw off screen.
os.environ.setdefault("MPLBACKEND", "Agg")

# --------------------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"fastgd {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
}
html_static_path = []
html_show_sourcelink = False

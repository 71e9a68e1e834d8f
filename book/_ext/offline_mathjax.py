"""Serve the vendored MathJax from ``_static/mathjax`` without loading it twice.

Jupyter Book adds every ``*.js`` file under ``book/_static`` to every page as a ``<script>``. For the vendored
MathJax that would load ``tex-chtml.js`` a second time, before its configuration, and every TeX extension eagerly.
MathJax must be loaded only by Sphinx's ``mathjax_path`` (see ``_config.yml``), so this extension drops the vendored
files from ``html_js_files`` again.
"""

VENDORED_PREFIX = "mathjax/"


def _filename(entry):
    return entry[0] if isinstance(entry, (tuple, list)) else entry


def _drop_vendored_mathjax(app, config):
    config.html_js_files = [
        entry for entry in config.html_js_files if not str(_filename(entry)).startswith(VENDORED_PREFIX)
    ]


def setup(app):
    app.connect("config-inited", _drop_vendored_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

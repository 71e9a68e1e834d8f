"""The book's own Sphinx extension: it reads results/ at build time and runs nothing.

- ``{study} <block>`` directive: renders a block of study_results.py (a verdict table, a cost table, ...) as
  MyST Markdown, in the page where it stands. Option ``:chapter:`` names the chapter of a chapter-level block;
  ``:model:`` the results folder (default: the one of the chapters in the table of contents).
- ``{result}`` role: one number or word from a results file, e.g.
  ``{result}`edit_count/summary.json | n_edits | int``` (syntax: study_results.resolve_result). This is how prose,
  the discussion included, cites a number without typing it.
- ``{figref}`` role: ``{figref}`fig-accuracy-vs-edits``` is a numbered reference to a chapter's figure (the names
  are set in the notebooks' cell metadata), or a missing marker when no chapter of this build has that figure.
- ``{study-missing}`` role: the marker a block or role shows for a result it cannot find.
- Chapters (the executed notebooks under results/): when Sphinx reads one, its cells get their presentation
  (cell_presentation.present: hidden code, figure captions) and the generated blocks are inserted after the
  cells tagged ``study-after-<block>`` (cell_presentation.render_view). Only the in-memory copy changes.
- Pages: identical inline scripts are loaded once (sphinx-thebe adds its configuration script twice, which is a
  console error). The stylesheet book/_static/study.css is added by Jupyter Book itself (every *.css there).

Every results file a page reads is registered as a dependency of that page, so an incremental build re-reads the
page when the file changes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import cell_presentation
import study_results

logger = logging.getLogger(__name__)
CHAPTER_DOC = re.compile(r"^(results/.+)/([^/]+)/\2$")
DEFAULT_MODEL = "results/smollm2-135m-instruct"


def model_rel_for(env, docname: str) -> str:
    """The results folder a page shows: its own for a chapter, else that of the chapters in the toc."""
    m = CHAPTER_DOC.match(docname)
    if m:
        return m.group(1)
    found = sorted(env.found_docs)
    for pattern in (r"^(results/.+)/claims_ledger/claims_ledger$", CHAPTER_DOC.pattern):
        for d in found:
            m = re.match(pattern, d)
            if m:
                return m.group(1)
    return DEFAULT_MODEL


def _ctx(env, docname: str, model: str | None = None) -> study_results.Ctx:
    return study_results.Ctx(book=Path(env.srcdir), model_rel=model or model_rel_for(env, docname),
                             docdir=str(Path(docname).parent))


class StudyDirective(SphinxDirective):
    required_arguments = 1
    option_spec = {"chapter": directives.unchanged, "model": directives.unchanged}

    def run(self):
        name = self.arguments[0]
        ctx = _ctx(self.env, self.env.docname, self.options.get("model"))
        m = CHAPTER_DOC.match(self.env.docname)
        chapter = self.options.get("chapter") or (m.group(2) if m else None)
        try:
            markdown = study_results.render_block(name, ctx, chapter)
        except (ValueError, KeyError) as exc:
            raise self.error(f"study {name}: {exc}")
        for dep in ctx.deps:
            self.env.note_dependency(dep)
        container = nodes.container(classes=["study-block", f"study-{name}"])
        self.state.nested_parse(StringList(markdown.splitlines(), source=f"<study {name}>"), self.content_offset,
                                container)
        return [container]


def result_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    env = inliner.document.settings.env
    ctx = _ctx(env, env.docname)
    try:
        value, found = study_results.resolve_result(ctx, text)
    except study_results.ResultError as exc:
        msg = inliner.reporter.warning(str(exc), line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    for dep in ctx.deps:
        env.note_dependency(dep)
    if not found:
        return [nodes.inline(rawtext, f"missing: {value}", classes=["study-missing"])], []
    return [nodes.inline(rawtext, value, classes=["study-result"])], []


def figref_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """{figref}`fig-name`: a numbered reference ("Figure 2") to a chapter figure, or a missing marker when no
    chapter of this build has it (e.g. a results folder from a quick run without that figure)."""
    env = inliner.document.settings.env
    ctx = _ctx(env, env.docname)
    target = text.strip()
    for dep in ctx.deps:
        env.note_dependency(dep)
    if target not in ctx.figures():
        return [nodes.inline(rawtext, f"missing: figure {target}", classes=["study-missing"])], []
    return env.get_domain("std").role("numref")("std:numref", rawtext, text, lineno, inliner, options or {},
                                                content or [])


def missing_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    return [nodes.inline(rawtext, f"missing: {text}", classes=["study-missing"])], []


def on_source_read(app, docname: str, source: list[str]) -> None:
    """Present a chapter notebook (in memory): cell presentation and the generated blocks."""
    m = CHAPTER_DOC.match(docname)
    if not m or not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    chapter = m.group(2)
    try:
        nb = json.loads(source[0])
    except json.JSONDecodeError:
        return
    notebooks = Path(app.srcdir).parent / "notebooks"
    src = None
    if (notebooks / f"{chapter}.py").is_file():
        app.env.note_dependency(str(notebooks / f"{chapter}.py"))
        try:
            src = cell_presentation.read_source(notebooks, chapter)
        except Exception as exc:  # a broken source notebook must not hide the executed one
            logger.warning(f"cannot read notebooks/{chapter}.py for its cell presentation: {exc}", location=docname)
    app.env.note_dependency(cell_presentation.__file__)
    app.env.note_dependency(study_results.__file__)
    nb = cell_presentation.render_view(cell_presentation.present(nb, chapter, src), chapter)
    source[0] = json.dumps(nb)


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        # the same script may come once with filename None and once with "" (an inline body): same key
        key = (str(getattr(js, "filename", js) or ""),
               tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.add_directive("study", StudyDirective)
    app.add_role("result", result_role)
    app.add_role("study-missing", missing_role)
    app.add_role("figref", figref_role)
    app.connect("source-read", on_source_read)
    app.connect("html-page-context", dedupe_scripts, priority=900)  # after the themes have added theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}

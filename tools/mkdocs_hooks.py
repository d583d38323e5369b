"""MkDocs hooks of duroxy's documentation site (``mkdocs.yml`` names this file).

Two parts of the site are generated at build time, so that they never drift from the
code:

* the API reference (``reference/*.md``): one page per module that defines names of
  ``duroxy.__all__`` (each name documented from its docstring by mkdocstrings, under the
  path users import it by, ``duroxy.Client``), plus the public modules of
  ``EXTRA_MODULES`` with the members of their own ``__all__``. A name added to an
  ``__all__`` appears in the reference at the next build, on its module's page (a new
  page for a new module);
* the command line reference (the ``<!-- duroxy-cli-reference -->`` marker of
  ``cli.md``): every command, its usage, help and arguments, from the parser itself.
"""

from __future__ import annotations

import argparse
import importlib
import textwrap
from dataclasses import dataclass, field
from typing import Any

#: Pages of the top-level names, by the module that defines them (a prefix matches its
#: submodules); a module not listed gets a page named after it.
TOPIC_PAGES: dict[str, tuple[str, str, str]] = {
    # module prefix: (page slug, title, what the page is about)
    "duroxy._connect": ("duroxy", "duroxy", "The package: opening a store by URL, the "
                        "version, and its constants."),
    "builtins": ("duroxy", "duroxy", ""),
    "duroxy._version": ("duroxy", "duroxy", ""),
    "duroxy._limits": ("duroxy", "duroxy", ""),
    "duroxy.runtime": ("runtime", "Runtime and registries", "Running orchestrations and "
                       "activities: the registries that name them, the runtime that runs "
                       "them, and what an activity is given."),
    "duroxy._engine": ("orchestration-context", "OrchestrationContext", "Everything an "
                       "orchestration may ask of duroxy."),
    "duroxy.client": ("client", "Client", "Starting, signalling, waiting for and reading "
                      "instances, and listing the workers."),
    "duroxy.options": ("options", "Options and retry policies", "How a runtime runs, and "
                       "how activities are retried."),
    "duroxy.errors": ("errors", "Errors", "Every error duroxy raises derives from "
                      "DuroxyError."),
}

#: Public modules documented with the members of their own ``__all__`` (those not
#: already on a page as a top-level name): (module, page slug, title, about).
EXTRA_MODULES: list[tuple[str, str, str, str]] = [
    ("duroxy.errors", "errors", "Errors", ""),
    ("duroxy.providers.sqlite", "sqlite", "SQLite store", "The embedded store, the default."),
    ("duroxy.providers.postgres", "postgres", "PostgreSQL store",
     "For several machines sharing one store (the `postgres` extra)."),
    ("duroxy.providers.memory", "memory", "In-memory store", "The reference store, for tests."),
    ("duroxy.codec", "codec", "Codec", "How payloads become JSON and come back typed."),
    ("duroxy.history", "history", "History events",
     "What `Client.read_history` returns: the recorded events of an execution; and "
     "history files (`Client.export_history`, `dump_histories`, `load_histories`)."),
    ("duroxy.testing", "testing", "Testing",
     "The test kit: the time-skipping environment, one activity's environment, the "
     "replayer and the determinism lint."),
    ("duroxy.providers", "providers", "Writing a store",
     "The contract every store implements."),
]


@dataclass
class Page:
    slug: str
    title: str
    about: str = ""
    #: mkdocstrings identifiers, in order
    identifiers: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"# {self.title}\n"]
        if self.about:
            parts.append(f"{self.about}\n")
        for ident in self.identifiers:
            parts.append(f"::: {ident}\n")
        return "\n".join(parts)


def _home(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or isinstance(obj, (int, str, float)):
        return "builtins"
    return module


def _topic(module: str) -> tuple[str, str, str]:
    for prefix, topic in TOPIC_PAGES.items():
        if module == prefix or module.startswith(prefix + "."):
            return topic
    name = module.removeprefix("duroxy.").lstrip("_").replace(".", "-") or "duroxy"
    return name, f"duroxy.{module.removeprefix('duroxy.')}", ""


def reference_pages() -> list[Page]:
    """The API reference's pages: every name of ``duroxy.__all__`` (as ``duroxy.NAME``)
    on the page of the module that defines it, then ``EXTRA_MODULES``."""
    import duroxy

    pages: dict[str, Page] = {}

    def page(slug: str, title: str, about: str) -> Page:
        if slug not in pages:
            pages[slug] = Page(slug, title, about)
        elif about and not pages[slug].about:
            pages[slug].about = about
        return pages[slug]

    # The package page first: connect() and the constants.
    page("duroxy", "duroxy", TOPIC_PAGES["duroxy._connect"][2])
    shown: set[int] = set()
    for name in duroxy.__all__:
        obj = getattr(duroxy, name)
        slug, title, about = _topic(_home(obj))
        page(slug, title, about).identifiers.append(f"duroxy.{name}")
        if not isinstance(obj, (int, str, float)):
            shown.add(id(obj))
    for module_name, slug, title, about in EXTRA_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if id(obj) in shown and not isinstance(obj, (int, str, float)):
                continue
            shown.add(id(obj))
            page(slug, title, about).identifiers.append(f"{module_name}.{name}")
    return [p for p in pages.values() if p.identifiers]


def reference_index(pages: list[Page]) -> str:
    lines = ["# API reference\n",
             "Generated from the docstrings. Every name of `duroxy.__all__` is importable "
             "from `duroxy`; the store and codec modules are imported by their own "
             "names.\n"]
    for p in pages:
        names = ", ".join(f"`{i.rsplit('.', 1)[-1]}`" for i in p.identifiers)
        lines.append(f"- [{p.title}]({p.slug}.md): {names}")
    return "\n".join(lines) + "\n"


# ====================================================================== command line
def cli_reference() -> str:
    """Markdown for every command of the ``duroxy`` parser: usage, help, arguments."""
    from duroxy.cli import build_parser

    parser = build_parser()
    out: list[str] = []
    out.append("## Global options\n")
    out.append(_arguments_table(parser, include_positionals=False))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, cmd in sub.choices.items():
        out.append(f"## `duroxy {name}`\n")
        out.append(f"{_sentence(helps.get(name) or cmd.description or '')}\n")
        usage = " ".join(cmd.format_usage().removeprefix("usage: ").split())
        usage = textwrap.fill(usage, 88, subsequent_indent="    ", break_on_hyphens=False,
                              break_long_words=False)
        out.append(f"```text\n{usage}\n```\n")
        table = _arguments_table(cmd, include_positionals=True, skip={"--store", "--json"})
        if table:
            out.append(table)
    return "\n".join(out)


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def _arguments_table(parser: argparse.ArgumentParser, *, include_positionals: bool,
                     skip: frozenset[str] | set[str] = frozenset()) -> str:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            if skip & set(action.option_strings):
                continue
            flag = ", ".join(action.option_strings)
            if action.nargs != 0:
                flag += f" {action.metavar or action.dest.upper()}"
        elif include_positionals:
            flag = str(action.metavar or action.dest)
        else:
            continue
        text = (action.help or "").replace("|", "\\|")
        if action.choices and not isinstance(action.choices, dict):
            text += " (one of: " + ", ".join(
                f"`{c}`" for c in dict.fromkeys(str(c).upper() for c in action.choices)) + ")"
        rows.append(f"| `{flag}` | {text} |")
    if not rows:
        return ""
    return "| argument | meaning |\n|---|---|\n" + "\n".join(rows) + "\n"


# ====================================================================== mkdocs hooks
CLI_MARKER = "<!-- duroxy-cli-reference -->"


REFERENCE_NAV_TITLE = "API reference"


def on_config(config: Any) -> Any:
    """The nav's "API reference" entry becomes the index and every generated page."""
    pages = reference_pages()
    entry = [{"Overview": "reference/index.md"}] + [
        {p.title: f"reference/{p.slug}.md"} for p in pages]
    nav = config.get("nav") or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and REFERENCE_NAV_TITLE in item:
            nav[i] = {REFERENCE_NAV_TITLE: entry}
            break
    else:
        nav.append({REFERENCE_NAV_TITLE: entry})
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    pages = reference_pages()
    files.append(File.generated(config, "reference/index.md", content=reference_index(pages)))
    for p in pages:
        files.append(File.generated(config, f"reference/{p.slug}.md", content=p.markdown()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown

"""Every command the README and docs/ show exists, with every flag they give it: each entry point's
``--help`` is asked, so a renamed or dropped flag fails here, not in a reader's terminal."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from cli_cases import in_process

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# `python -m tl.search ...` anywhere, or an inline-code span that starts with an entry point.
COMMAND = re.compile(r"python3? -m ((?:tl|analysis|benchmarks)\.[a-z_]+)([^\n`\"]*(?:\\\n[^\n`\"]*)*)")
INLINE = re.compile(r"`((?:tl\.(?:search|export|predict|audit)|analysis\.summarize)) (--[^`]*)`")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _commands() -> list[tuple[str, str, str]]:
    """(page, module, flag) for every flag given to an entry point in the pages."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for pattern in (COMMAND, INLINE):
            for module, rest in pattern.findall(text):
                rest = re.split(r"&&|;|\|\s|, then |\bthen\b", rest)[0]  # a second command starts here
                # after a bare `--` (benchmarks.memory -- SEARCH ARGS) the flags are tl.search's
                own, _, forwarded = rest.partition(" -- ")
                found += [(page.relative_to(ROOT).as_posix(), module, flag) for flag in FLAG.findall(own)]
                found += [(page.relative_to(ROOT).as_posix(), "tl.search", flag) for flag in FLAG.findall(forwarded)]
                found.append((page.relative_to(ROOT).as_posix(), module, ""))
    return sorted(set(found))


@lru_cache(maxsize=None)
def _help(module: str) -> subprocess.CompletedProcess:
    """``python -m MODULE --help``, asked in this process: every entry point's ``main(argv)`` parses
    ``--help``, prints and exits before doing anything else. (As 16 subprocesses it was 21 s of imports
    on 2 cores.) That the module runs as ``python -m`` is checked apart, from its ``__main__`` guard."""
    return in_process(module, ["--help"])


def test_each_documented_entry_point_runs_as_a_module():
    for module in sorted({m for _, m, _ in _commands()}):
        spec = importlib.util.find_spec(module)
        if spec.submodule_search_locations:  # a package: python -m runs its __main__.py
            source = Path(spec.submodule_search_locations[0], "__main__.py").read_text()
            assert "sys.exit(main())" in source, f"python -m {module} would do nothing: its __main__.py runs no main"
            continue
        source = Path(spec.origin).read_text()
        assert 'if __name__ == "__main__":' in source, f"python -m {module} would do nothing: no __main__ guard"


def test_the_pages_name_commands_at_all():
    modules = {m for _, m, _ in _commands()}
    assert {"tl.search", "tl.export", "tl.predict", "tl.audit", "analysis.summarize"} <= modules, modules


@lru_cache(maxsize=None)
def _all_help(module: str) -> str:
    """The entry point's --help and, for one with subcommands (``tl.cache list|prune``), each one's."""
    text = _help(module).stdout
    choices = re.search(r"\{([a-z_,-]+)\}", text.split("\n\n")[0])
    for sub in (choices.group(1).split(",") if choices else []):
        text += in_process(module, [sub, "--help"]).stdout
    return text


@pytest.mark.parametrize("page, module, flag", _commands())
def test_each_documented_command_and_flag_exists(page, module, flag):
    proc = _help(module)
    assert proc.returncode == 0, f"{page}: python -m {module} --help failed:\n{proc.stderr[-1500:]}"
    if flag:
        text = _all_help(module)
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), \
            f"{page}: {module} has no {flag} (its --help: {text[:3000]})"

"""Running many bad-input cases of one CLI quickly: which cases pytest selected, and a case run
through the entry point's ``main(argv)`` in this process instead of a fresh interpreter."""
from __future__ import annotations

import importlib
import io
import os
import subprocess
import traceback
from contextlib import redirect_stderr, redirect_stdout

import pytest


def selected_params(request: pytest.FixtureRequest, test_name: str, param: str) -> list:
    """The values of ``param`` that this session will run ``test_name`` with (after -k and -m), so a
    module fixture that runs every case at once runs only the selected ones."""
    return [item.callspec.params[param] for item in request.session.items
            if getattr(item, "originalname", None) == test_name and hasattr(item, "callspec")]


def in_process(module: str, args: list[str]) -> subprocess.CompletedProcess:
    """``MODULE.main(args)``, what ``python -m MODULE`` runs (``sys.exit(main())``), in this process:
    a case refused before Ray starts costs milliseconds instead of a fresh interpreter's 4 s of
    imports. An exception that escapes main is reported as exit 1 with its traceback on stderr, as
    the interpreter would; the environment is restored after (torch and Ray set variables)."""
    out, err, environ = io.StringIO(), io.StringIO(), dict(os.environ)
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = importlib.import_module(module).main(args)
        except SystemExit as e:  # argparse's own errors
            code = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 - a traceback is what the caller's test must catch
            code = 1
            err.write(traceback.format_exc())
        finally:
            os.environ.clear()
            os.environ.update(environ)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

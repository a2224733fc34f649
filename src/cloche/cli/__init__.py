"""The command line: one module per subcommand, a thin shell over cloche.api and the library.

Every module in this package that defines a module-level ``command`` (a click.Command) is
registered as a subcommand by ``cloche.cli.main``; nothing else needs editing to add one.
"""

import os as _os
import signal as _signal
import sys as _sys


def _interrupted_early(signum: int, frame: object) -> None:
    """Ctrl-C while the command is still importing: one line and 130, not a traceback."""
    _os.write(2, b"interrupted\n")
    _os._exit(130)


# Only for the console script (``cloche`` or ``python -m cloche.cli.main``), never for a
# program that imports this package; ``cli.main.main`` puts Python's handler back.
if (_os.path.basename(_sys.argv[0] if _sys.argv else "") == "cloche"
        or (_sys.argv and _sys.argv[0].endswith(_os.path.join("cloche", "cli", "main.py")))) \
        and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _interrupted_early)
    for _sig in (_signal.SIGTERM, _signal.SIGHUP):  # stopped as by Ctrl-C (cli.main)
        if _signal.getsignal(_sig) is _signal.SIG_DFL:
            _signal.signal(_sig, _interrupted_early)

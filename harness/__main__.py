"""``python -m harness`` and the ``nta`` script: the CLI, with a signal that comes before it has installed
its handlers (while Python imports it) ending the process at once, in one line: nothing is made yet."""

import os
import signal


def _before_the_cli(signum, frame):
    os.write(2, b"nta: interrupted before it started; nothing was made\n")
    os._exit(130)


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _before_the_cli)
    from harness.cli import main as cli_main  # the CLI installs its own handlers before it makes anything

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())

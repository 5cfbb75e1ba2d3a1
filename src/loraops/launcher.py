"""`python -m loraops.launcher torchrun|accelerate ARGS...`: the standard launchers, run through their own Python
entry points (torch.distributed.run, accelerate launch), so that a process that failed is reported by its exit
status (2: a user error it already printed) rather than by the launcher's traceback on top of its message."""

from __future__ import annotations

import logging
import signal
import sys


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    kind, args = argv[0], argv[1:]
    # The failed process said why; the agent's own error lines would only repeat it, less clearly.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        if kind == "accelerate":
            from accelerate.commands.launch import launch_command, launch_command_parser

            launch_command(launch_command_parser().parse_args(args))
        else:
            from torch.distributed.run import get_args_parser, run

            run(get_args_parser().parse_args(args))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode >= 0:
            return failure.exitcode
        name = signal.Signals(-failure.exitcode).name
        print(f"loraops: error: training process {rank} was killed by {name}", file=sys.stderr)
        return 128 - failure.exitcode
    except SignalException as exc:  # the launcher itself was stopped: it stopped its processes first
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

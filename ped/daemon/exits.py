"""The exit codes of the daemons' command lines (part of their interface)."""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # ``mode show``: the daemon is not running

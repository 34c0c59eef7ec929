"""The local launcher behind `make run`, and the processes it supervises."""

import os

# Who started the launcher, read before anything heavy is imported: the watch on it
# (launcher.__main__) began about a second later, and a parent gone in that second was
# never noticed, leaving the whole system running with no one to stop it.
PARENT_AT_START = os.getppid()

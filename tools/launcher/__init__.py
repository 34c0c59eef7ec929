"""The local launcher behind `make run`, and the processes it supervises."""

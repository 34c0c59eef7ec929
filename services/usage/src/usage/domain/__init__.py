"""The rules of usage: plans, periods, the ledger and its audit. No protobuf, no SQL."""

"""The gRPC face of the usage service: servicer and protobuf <-> domain mappers."""

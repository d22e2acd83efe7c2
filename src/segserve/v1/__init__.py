"""Generated gRPC stubs of proto/segserve/v1 (make proto). Do not edit."""

"""hashmatch service: gRPC matching for platforms and list sync for hotlines."""

__version__ = "0.1.0"

"""segserve: corrosion segmentation for photos of pipes, served over gRPC and HTTP."""

__version__ = "0.1.0"

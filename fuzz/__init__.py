"""Fuzz targets (atheris) and their seed corpus; see fuzz_decode.py."""

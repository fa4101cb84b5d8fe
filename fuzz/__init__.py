"""atheris fuzz targets, one module per parser of outside input (see fuzz/harness.py)."""

"""Reading a test lake's Delta tables by path (tests only)."""

from flowlake.lake import Lake  # noqa: F401 - tests build Lake(root) through this module too


def read(spark, path: str):
    """A Delta table by path."""
    return spark.read.format("delta").load(path)

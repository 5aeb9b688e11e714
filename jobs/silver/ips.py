"""IP addresses: canonical form and CIDR classes, one code path for IPv4 and IPv6.

The CIDR class is a vectorised UDF that works per distinct value in each Arrow batch
(flow tables repeat the same few addresses millions of times).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType

from flowlake.contracts import canonical_ip
from flowlake.jobs.config import CidrClass


def _map_distinct(values: pd.Series, fn: Callable[[str], str | None]) -> pd.Series:
    uniques = values.dropna().unique()
    mapping = {u: fn(u) for u in uniques}
    return values.map(mapping).astype(object).where(values.notna(), None)


def canonical_or_none(text: str | None) -> str | None:
    """The contract's canonical form of an IP text, or None when it is not an IP address."""
    if text is None:
        return None
    try:
        return canonical_ip(text)
    except ValueError:
        return None


def cidr_classifier(classes: Sequence[CidrClass]) -> Callable[[str], str | None]:
    """A function IP text -> class name by longest prefix (None: internal space or no class)."""
    nets = sorted(
        ((ipaddress.ip_network(c.cidr), c.name) for c in classes),
        key=lambda item: item[0].prefixlen,
        reverse=True,
    )

    def classify(text: str) -> str | None:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return None
        for net, name in nets:
            if addr.version == net.version and addr in net:
                return name
        return None

    return classify


def cidr_class_col(col: Column | str, *, classes: Sequence[CidrClass]) -> Column:
    """Class name of an IP column per ``classes`` (longest prefix wins); null when none applies."""
    classify = cidr_classifier(classes)

    @pandas_udf(StringType())
    def _classify(values: pd.Series) -> pd.Series:
        return _map_distinct(values, classify)

    return _classify(F.col(col) if isinstance(col, str) else col)


def non_canonical_ip_col(col: Column | str) -> Column:
    """The column's value where it is not an IP address in the contract's canonical form, else null.

    Marked non-deterministic so that Spark runs it where it is written: a filter on it after a
    ``distinct()`` was otherwise pushed below the distinct, onto every row (20M Python calls at 10M records)."""

    @pandas_udf(StringType())
    def _bad(values: pd.Series) -> pd.Series:
        return _map_distinct(values, lambda v: None if canonical_or_none(v) == v else v)

    return _bad.asNondeterministic()(F.col(col) if isinstance(col, str) else col)

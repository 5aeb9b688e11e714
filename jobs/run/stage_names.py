"""The pipeline's stages in order (dependency-free, so the Airflow DAG can load it by path).

:mod:`flowlake.jobs.run.stages` registers one stage per name; ``quality`` re-checks what the
earlier stages published and is not part of a default run; ``maintain`` acts only when due.
"""

STAGE_NAMES = ("ingest", "ownership", "attribute", "quality", "gold", "maintain")
DEFAULT_STAGES = ("ingest", "ownership", "attribute", "gold", "maintain")

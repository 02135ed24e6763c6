"""The experiment kit every pipeline is built from: paired comparisons pooled over seeds
(:mod:`.compare`), per-item evaluation cached by content (:mod:`.evaluate`), training on
per-client records (:mod:`.train`) and the report (:mod:`.report`)."""

from fedloom.experiment.compare import (
    VERDICTS,
    CompareError,
    Comparison,
    SeedResult,
    compare,
    verdict_of,
)

__all__ = ["VERDICTS", "CompareError", "Comparison", "SeedResult", "compare", "verdict_of"]

"""Data: record schema, package-backed sources, chat templating, partitioners."""

import fedloom.data.catalog  # noqa: E402,F401  (registers the package sources)
from fedloom.data.federated import FederatedData, build_federated_data, summary_table
from fedloom.data.partition import PARTITIONERS, PartitionError, partition
from fedloom.data.schema import (
    SCHEMAS,
    ConversationRecord,
    InstructionRecord,
    MultipleChoiceRecord,
    PreferenceRecord,
    PromptRecord,
    TextRecord,
    as_instruction,
)
from fedloom.data.sources import (
    SOURCES,
    DataSourceError,
    DataWarning,
    LoadReport,
    load_source,
    load_source_report,
)
from fedloom.data.template import IGNORE_INDEX, TokenizedExample, collate, tokenize_example

__all__ = [
    "SCHEMAS",
    "ConversationRecord",
    "DataWarning",
    "LoadReport",
    "MultipleChoiceRecord",
    "PreferenceRecord",
    "PromptRecord",
    "TextRecord",
    "as_instruction",
    "load_source_report",
    "IGNORE_INDEX",
    "PARTITIONERS",
    "SOURCES",
    "DataSourceError",
    "FederatedData",
    "InstructionRecord",
    "PartitionError",
    "TokenizedExample",
    "build_federated_data",
    "collate",
    "load_source",
    "partition",
    "summary_table",
    "tokenize_example",
]

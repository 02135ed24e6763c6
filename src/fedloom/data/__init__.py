"""Data: record schema, package-backed sources, chat templating, partitioners."""

from fedloom.data.federated import FederatedData, build_federated_data, summary_table
from fedloom.data.partition import PARTITIONERS, PartitionError, partition
from fedloom.data.schema import InstructionRecord
from fedloom.data.sources import SOURCES, DataSourceError, load_source
from fedloom.data.template import IGNORE_INDEX, TokenizedExample, collate, tokenize_example

__all__ = [
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

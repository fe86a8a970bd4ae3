"""Datasets: one Zarr v3 store per dataset (store), statistics, merge/split, samplers and torch loaders,
and the tools behind `robot-stack data` (report, view, video, bag_import).

Recorders write with DatasetWriter; everything downstream reads with Dataset.open (docs/dataset.md: the schema).
"""

from robot_stack.data.merge import merge, select_episodes, split
from robot_stack.data.store import (
    TIMESTAMP,
    Dataset,
    DatasetSchema,
    DatasetWriter,
    EpisodeInfo,
    FeatureSpec,
    FrameView,
    Labels,
    RecoverResult,
    recover,
    validate,
)

# robot_stack.data.sampling (numpy) and robot_stack.data.loader (needs torch) are imported by name.
__all__ = [
    "TIMESTAMP", "Dataset", "DatasetSchema", "DatasetWriter", "EpisodeInfo", "FeatureSpec", "FrameView", "Labels",
    "RecoverResult", "merge", "recover", "select_episodes", "split", "validate",
]

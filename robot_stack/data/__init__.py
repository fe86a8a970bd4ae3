"""Datasets: one Zarr v3 store per dataset (schema, store, writer, dataset, damage, check, recover, marks,
fingerprint), statistics, merge/split, samplers, torch loaders, and the tools behind `robot-stack data`.

Recorders write with DatasetWriter; everything downstream reads with Dataset.open (docs/dataset.md: the schema).
"""

from robot_stack.data.check import dataset_damage, validate
from robot_stack.data.dataset import Dataset, EpisodeInfo, FrameView, Labels
from robot_stack.data.marks import mark_episodes
from robot_stack.data.merge import merge, select_episodes, split
from robot_stack.data.recover import RecoverResult, recover
from robot_stack.data.schema import EPISODE_SOURCES, TIMESTAMP, DatasetSchema, FeatureSpec
from robot_stack.data.writer import DatasetWriter

# robot_stack.data.sampling (numpy) and robot_stack.data.loader (needs torch) are imported by name.
__all__ = [
    "EPISODE_SOURCES", "TIMESTAMP", "Dataset", "DatasetSchema", "DatasetWriter", "EpisodeInfo", "FeatureSpec", "FrameView", "Labels",
    "RecoverResult", "dataset_damage", "mark_episodes", "merge", "recover", "select_episodes", "split", "validate",
]

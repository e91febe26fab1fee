from .datasets import DATASETS, DataSplits, load_dataset
from .loader import TensorLoader
from .readers import DatasetError

__all__ = ["DATASETS", "DataSplits", "load_dataset", "TensorLoader", "DatasetError"]

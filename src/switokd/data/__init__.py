from .datasets import DATASETS, DataSplits, load_dataset, make_loaders
from .loader import TensorLoader
from .readers import DatasetError
from .stream import StreamingLoader, StreamSplits
from .user import DatasetSplits

__all__ = ["DATASETS", "DataSplits", "StreamSplits", "load_dataset", "make_loaders", "TensorLoader",
           "StreamingLoader", "DatasetError", "DatasetSplits"]

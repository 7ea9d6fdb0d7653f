"""worldplay: play, record and train interactive world models on your own machine.

The public API grows with the project; today it is the gameplay data layer::

    from worldplay import open_dataset
    ds = open_dataset("data/toy")     # ds.action_names; len(ds); ds[i] -> Episode
    ep = ds[0]                        # ep.frames uint8 [T, H, W, 3]; ep.actions int32 [T]
"""

from worldplay.data.format import Dataset, DatasetWriter, Episode, open_dataset
from worldplay.errors import WorldplayError

__all__ = ["Dataset", "DatasetWriter", "Episode", "WorldplayError", "open_dataset"]
__version__ = "0.1.0"

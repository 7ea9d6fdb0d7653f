"""worldplay: play, record and train interactive world models on your own machine.

    from worldplay import load_world, open_dataset
    ds = open_dataset("data/boxing")             # ds.action_names; len(ds); ds[i] -> Episode
    ep = ds[0]                                   # ep.frames uint8 [T, H, W, 3]; ep.actions int32 [T]
    world = load_world("checkpoints/boxing")     # world.action_names, world.fps, world.frame_shape
    state = world.start(ep.frames[:4], ep.actions[:3])
    state, frame = world.step(state, ep.actions[3], guidance=1.5)   # uint8 [H, W, 3]
    env = WorldModelEnv(world, max_episode_steps=200)             # Gymnasium env (WorldModelVectorEnv: B streams)

Importing the package is cheap: the model code (JAX) loads on first use of
``load_world``, ``WorldModel``, ``WorldModelEnv`` or ``WorldModelVectorEnv``.
"""

from typing import Any

from worldplay.data.format import Dataset, DatasetWriter, Episode, open_dataset
from worldplay.errors import WorldplayError

__all__ = [
    "Dataset",
    "DatasetWriter",
    "Episode",
    "WorldModel",
    "WorldModelEnv",
    "WorldModelVectorEnv",
    "WorldplayError",
    "load_world",
    "open_dataset",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("load_world", "WorldModel", "WorldState"):
        from worldplay import world

        return getattr(world, name)
    if name in ("WorldModelEnv", "WorldModelVectorEnv"):
        from worldplay import env

        return getattr(env, name)
    raise AttributeError(f"module 'worldplay' has no attribute {name!r}")

"""A person plays in a window with the arrow keys (pygame): the ``human`` policy of ``worldplay record``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worldplay.data.sources import StopRecording
from worldplay.keymap import Keymap
from worldplay.play import Window


class HumanPolicy:
    """A person plays in a window with the arrow keys and space; Esc or closing the window stops."""

    name = "human"

    def __init__(self, action_names: Sequence[str], fps: float = 15.0):
        self.keymap = Keymap(action_names)
        self.action_names = tuple(action_names)
        self.fps = fps
        self._window: Window | None = None
        self._frames = 0

    def reset(self, seed: int) -> None:
        self._frames = 0

    def __call__(self, frame: np.ndarray) -> int:
        if self._window is None:
            self._window = Window("worldplay record: arrows + space, Esc to stop", frame.shape)
        w = self._window
        if w.poll():
            w.close()
            self._window = None
            raise StopRecording
        action = self.keymap.action(w.held_controls())
        w.show(frame, [f"REC {self._frames:5d}  {self.action_names[action]}"])
        w.tick(self.fps)
        self._frames += 1
        return action

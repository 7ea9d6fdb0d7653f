"""The pygame front end: a window that shows frames and reads the arrow keys.

It knows nothing about how frames are made: it drives anything with
``action_names``, ``fps``, ``reset(seed) -> frame`` and ``step(action) ->
(frame, ...)``. Until a trained world ships, ``worldplay play`` drives the built-in
toy game itself through this same door; the ``human`` recording policy uses the
same window.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worldplay.data.sources import Source, StopRecording
from worldplay.errors import WorldplayError
from worldplay.keymap import Keymap, parse_key_script

DEFAULT_WINDOW_PX = 512
HEADLESS_HINT = "worldplay play --headless --keys 'RIGHT*20,UP*10,LEFT*20' --video play.mp4"


def has_display() -> bool:
    """True when SDL can open a window here (an X or Wayland display, or an explicit SDL driver)."""
    if os.environ.get("SDL_VIDEODRIVER"):
        return True
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    return pygame


class Window:
    """A pygame window that shows uint8 frames scaled to ``size`` px and reports held controls."""

    def __init__(self, title: str, frame_shape: Sequence[int], *, size: int = DEFAULT_WINDOW_PX, smooth: bool = False):
        if not has_display():
            raise WorldplayError(
                "no display to open a window on (DISPLAY is not set). Without a screen, play "
                f"headless, e.g.:\n  {HEADLESS_HINT}"
            )
        pg = self.pg = _pygame()
        try:
            pg.display.init()
            pg.font.init()
        except pg.error as e:
            raise WorldplayError(f"cannot open a window ({e}). Without a screen, use:\n  {HEADLESS_HINT}") from e
        h, w = int(frame_shape[0]), int(frame_shape[1])
        scale = max(1, size // max(h, w))
        self.size = (w * scale, h * scale)
        self.screen = pg.display.set_mode(self.size)
        pg.display.set_caption(title)
        self.smooth = smooth
        self.clock = pg.time.Clock()
        self.font = pg.font.Font(None, 20)
        self._controls = {
            pg.K_UP: "UP",
            pg.K_DOWN: "DOWN",
            pg.K_LEFT: "LEFT",
            pg.K_RIGHT: "RIGHT",
            pg.K_SPACE: "FIRE",
        }
        self._held: set[str] = set()

    def show(self, frame: np.ndarray, lines: Sequence[str] = ()) -> None:
        pg = self.pg
        surf = pg.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        scaler = pg.transform.smoothscale if self.smooth else pg.transform.scale
        self.screen.blit(scaler(surf, self.size), (0, 0))
        for k, line in enumerate(lines):
            text = self.font.render(line, True, (255, 255, 255), (0, 0, 0))
            self.screen.blit(text, (6, 6 + 18 * k))
        pg.display.flip()

    def held_controls(self) -> set[str]:
        """Controls (UP, DOWN, LEFT, RIGHT, FIRE) held down, as of the last :meth:`poll`."""
        return set(self._held)

    def poll(self) -> bool:
        """Drain the event queue, tracking held keys; True if the window was closed or Esc pressed.

        Held keys are followed through KEYDOWN/KEYUP events (not the keyboard
        state), so scripted events drive the window exactly as a person does.
        """
        pg = self.pg
        quit_ = False
        for event in pg.event.get():
            if event.type == pg.QUIT or (event.type == pg.KEYDOWN and event.key == pg.K_ESCAPE):
                quit_ = True
            elif event.type == pg.KEYDOWN and event.key in self._controls:
                self._held.add(self._controls[event.key])
            elif event.type == pg.KEYUP and event.key in self._controls:
                self._held.discard(self._controls[event.key])
            elif event.type == pg.WINDOWFOCUSLOST:
                self._held.clear()
        return quit_

    def tick(self, fps: float) -> None:
        self.clock.tick(fps)

    def close(self) -> None:
        self.pg.display.quit()


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


def play_source(
    source: Source,
    *,
    title: str,
    seed: int = 0,
    headless: bool = False,
    keys: str | None = None,
    video: str | os.PathLike[str] | None = None,
    window_px: int = DEFAULT_WINDOW_PX,
) -> list[np.ndarray]:
    """Play ``source`` with the keyboard, or headless with a key script; returns the frames shown."""
    if headless and not keys:
        raise WorldplayError("--headless needs --keys, e.g. --keys 'RIGHT*20,UP*10'")
    script = parse_key_script(keys, source.action_names) if keys else None
    frame = source.reset(seed)
    frames = [frame]
    if headless:
        for action in script or []:
            frame = source.step(action)[0]
            frames.append(frame)
    else:
        keymap = Keymap(source.action_names)
        window = Window(title, source.frame_shape, size=window_px)
        try:
            t = 0
            while not window.poll():
                if script is not None:
                    if t >= len(script):
                        break
                    action = script[t]
                else:
                    action = keymap.action(window.held_controls())
                window.show(frame, [f"{source.action_names[action]}  frame {t}", "arrows/space to play, Esc quits"])
                frame, _, terminated, truncated = source.step(action)
                frames.append(frame)
                t += 1
                if terminated or truncated:
                    frame = source.reset(seed)
                window.tick(source.fps)
        finally:
            window.close()
    if video is not None:
        from worldplay.video import write_video

        scale = max(1, min(8, window_px // max(source.frame_shape[:2])))
        write_video(Path(video), frames, fps=source.fps, scale=scale)
    return frames

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
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from worldplay.data.sources import Source
from worldplay.errors import WorldplayError
from worldplay.keymap import Keymap, parse_key_script
from worldplay.video import prompt_from_image

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


#: Keys of the play window besides the arrows (and space, which is also FIRE), as listed in the help overlay.
COMMAND_KEYS = {
    "help": "F1 or ?",
    "hud": "H",
    "guidance_up": "+",
    "guidance_down": "-",
    "restart": "R",
    "pause": "Enter (or Space in a world without FIRE)",
    "rewind": "Backspace",
    "screenshot": "P",
    "record": "V",
}


def _command(pg, event) -> str | None:
    key, text = event.key, getattr(event, "unicode", "")
    if key == pg.K_F1 or text == "?":
        return "help"
    table = {
        pg.K_h: "hud",
        pg.K_PLUS: "guidance_up",
        pg.K_EQUALS: "guidance_up",
        pg.K_KP_PLUS: "guidance_up",
        pg.K_MINUS: "guidance_down",
        pg.K_KP_MINUS: "guidance_down",
        pg.K_r: "restart",
        pg.K_RETURN: "pause",
        pg.K_KP_ENTER: "pause",
        pg.K_PAUSE: "pause",
        pg.K_BACKSPACE: "rewind",
        pg.K_p: "screenshot",
        pg.K_v: "record",
        pg.K_SPACE: "space",
    }
    return table.get(key)


def require_display() -> None:
    """Refuse, with the headless command to use instead, where no window can be opened."""
    if not has_display():
        raise WorldplayError(
            "no display to open a window on (DISPLAY is not set). Without a screen, play "
            f"headless, e.g.:\n  {HEADLESS_HINT}"
        )


class Window:
    """A pygame window that shows uint8 frames scaled to ``size`` px and reports held controls."""

    def __init__(self, title: str, frame_shape: Sequence[int], *, size: int = DEFAULT_WINDOW_PX, smooth: bool = False):
        require_display()
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

    def show(self, frame: np.ndarray, lines: Sequence[str] = (), overlay: Sequence[str] = ()) -> None:
        """Draw a frame scaled to the window, HUD ``lines`` top left and a centred ``overlay`` box."""
        pg = self.pg
        surf = pg.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        scaler = pg.transform.smoothscale if self.smooth else pg.transform.scale
        self.screen.blit(scaler(surf, self.size), (0, 0))
        for k, line in enumerate(lines):
            text = self.font.render(line, True, (255, 255, 255), (0, 0, 0))
            self.screen.blit(text, (6, 6 + 18 * k))
        if overlay:
            box = pg.Surface((self.size[0] - 40, 20 * len(overlay) + 16), pg.SRCALPHA)
            box.fill((0, 0, 0, 200))
            for k, line in enumerate(overlay):
                box.blit(self.font.render(line, True, (255, 255, 255)), (10, 8 + 20 * k))
            self.screen.blit(box, (20, max(20, (self.size[1] - box.get_height()) // 2)))
        pg.display.flip()

    def screenshot(self, path: str | os.PathLike[str]) -> None:
        self.pg.image.save(self.screen, str(path))

    def held_controls(self) -> set[str]:
        """Controls (UP, DOWN, LEFT, RIGHT, FIRE) held down, as of the last :meth:`poll`."""
        return set(self._held)

    def poll(self) -> bool:
        """Drain the event queue, tracking held keys; True if the window was closed or Esc pressed.

        Held keys are followed through KEYDOWN/KEYUP events (not the keyboard
        state), so scripted events drive the window exactly as a person does.
        """
        return self.poll_commands()[0]

    def poll_commands(self) -> tuple[bool, list[str]]:
        """Like :meth:`poll`, and the commands (:data:`COMMAND_KEYS`) pressed since the last call."""
        pg = self.pg
        quit_ = False
        commands: list[str] = []
        for event in pg.event.get():
            if event.type == pg.QUIT or (event.type == pg.KEYDOWN and event.key == pg.K_ESCAPE):
                quit_ = True
            if event.type == pg.KEYDOWN and (cmd := _command(pg, event)) is not None:
                commands.append(cmd)
            if event.type == pg.KEYDOWN and event.key in self._controls:
                self._held.add(self._controls[event.key])
            elif event.type == pg.KEYUP and event.key in self._controls:
                self._held.discard(self._controls[event.key])
            elif event.type == pg.WINDOWFOCUSLOST:
                self._held.clear()
        return quit_, commands

    def tick(self, fps: float) -> None:
        self.clock.tick(fps)

    def close(self) -> None:
        self.pg.display.quit()


def _next_action(script: list[int] | None, t: int, keymap: Keymap, window: Window) -> int | None:
    """The scripted action of step ``t`` (None when the script is over), else the held keys' action."""
    if script is not None:
        return script[t] if t < len(script) else None
    return keymap.action(window.held_controls())


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
                action = _next_action(script, t, keymap, window)
                if action is None:
                    break
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


# ---------------------------------------------------------------------------
# Playing a trained world
# ---------------------------------------------------------------------------

GUIDANCE_STEP = 0.25
GUIDANCE_MAX = 8.0


class WorldSession:
    """A play session of a world, apart from any window: stepping, guidance, pause, rewind, recording.

    Every frame's state is kept for the last ``rewind_seconds``; states are
    immutable, so rewinding is going back to one of them and playing on from there
    with other keys (counterfactual play).
    """

    def __init__(
        self,
        world,
        prompt_frames: np.ndarray,
        prompt_actions: np.ndarray | None = None,
        *,
        guidance: float | None = None,
        seed: int = 0,
        rewind_seconds: float = 3.0,
        record_dir: str | os.PathLike[str] = "recordings",
    ):
        import collections

        self.world = world
        self.prompt_frames = np.asarray(prompt_frames)
        self.prompt_actions = prompt_actions
        self.seed = seed
        self.guidance = float(world.config.guidance if guidance is None else guidance)
        self.paused = False
        self.record_dir = Path(record_dir)
        self.recording: tuple[list[np.ndarray], list[int]] | None = None
        self.ms_per_frame = 0.0
        self.last_action = 0
        self._history: collections.deque = collections.deque(maxlen=max(1, round(rewind_seconds * world.fps)) + 1)
        self.restart()

    # -- state ---------------------------------------------------------------------
    def restart(self) -> None:
        """Back to the prompt (a new random draw each restart)."""
        self.seed += 1
        self.state = self.world.start(self.prompt_frames, self.prompt_actions, seed=self.seed)
        self.frame = self.prompt_frames[-1]
        self.frame_count = 0
        self._history.clear()
        self._history.append((self.state, self.frame, self.frame_count))

    def step(self, action: int) -> np.ndarray:
        """One frame of the world for ``action`` (nothing moves while paused)."""
        if self.paused:
            return self.frame
        t = time.perf_counter()
        self.state, frame = self.world.step(self.state, action, guidance=self.guidance)
        self.ms_per_frame = 1000 * (time.perf_counter() - t)
        if self.recording is not None:
            self.recording[1].append(int(action))
            self.recording[0].append(frame)
        self.frame, self.last_action = frame, int(action)
        self.frame_count += 1
        self._history.append((self.state, self.frame, self.frame_count))
        return frame

    def rewind(self) -> int:
        """Go back to the oldest kept frame (``rewind_seconds`` ago); returns how many frames back."""
        state, frame, count = self._history[0]
        back = self.frame_count - count
        self.state, self.frame, self.frame_count = state, frame, count
        self._history.clear()
        self._history.append((state, frame, count))
        if self.recording is not None and back:
            if back >= len(self.recording[1]):  # rewound past the start of the recording: start it here
                self.recording = ([frame], [])
            else:
                del self.recording[0][-back:], self.recording[1][-back:]
        return back

    def change_guidance(self, delta: float) -> float:
        self.guidance = float(np.clip(round(self.guidance + delta, 4), 0.0, GUIDANCE_MAX))
        return self.guidance

    def toggle_pause(self) -> bool:
        self.paused = not self.paused
        return self.paused

    # -- recording -----------------------------------------------------------------
    def toggle_recording(self) -> list[Path]:
        """Start recording, or stop and write the MP4 and a dataset episode; returns the files written."""
        if self.recording is None:
            self.recording = ([self.frame], [])
            return []
        frames, actions = self.recording
        self.recording = None
        if not actions:
            return []
        from worldplay.data.format import DatasetWriter
        from worldplay.video import write_video

        self.record_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        video = write_video(self.record_dir / f"play-{stamp}.mp4", frames, fps=self.world.fps, scale=8)
        writer = DatasetWriter.create(
            self.record_dir / "dataset",
            frame_shape=self.world.frame_shape,
            action_names=self.world.action_names,
            fps=self.world.fps,
        )
        # actions[t] was taken at frames[t]; the last frame has no action yet, so it stays in the video only
        episode = writer.write_episode(
            np.stack(frames[:-1]),
            np.asarray(actions, np.int32),
            meta={"source": "world", "world": self.world.meta.get("name"), "policy": "human", "fps": self.world.fps},
        )
        return [video, episode]

    def hud(self, fps: float | None = None) -> list[str]:
        """HUD lines; ``fps`` is the frame rate the window achieves (generation alone allows 1000/ms)."""
        shown = f"{fps:4.1f} fps  " if fps is not None else ""
        lines = [
            f"{shown}{self.ms_per_frame:5.1f} ms/frame (max {1000 / max(self.ms_per_frame, 1e-3):4.1f} fps)",
            f"action {self.world.action_names[self.last_action]}  guidance {self.guidance:.2f}",
            f"frame {self.frame_count}" + ("  PAUSED" if self.paused else "") + ("  REC" if self.recording else ""),
        ]
        return lines


def help_lines(world) -> list[str]:
    fire = "FIRE" in world.action_names
    return [
        "arrows (and diagonals): move" + ("   Space: FIRE" if fire else ""),
        "+ / -: guidance (how strongly the world obeys the keys)",
        "Enter" + ("" if fire else " or Space") + ": pause    Backspace: rewind 3 s (then branch)",
        "R: restart    P: save PNG    V: start/stop recording (MP4 + dataset episode)",
        "H: HUD    F1 or ?: this help    Esc: quit",
    ]


def play_world(
    world,
    *,
    prompt: str | os.PathLike[str] | None = None,
    headless: bool = False,
    keys: str | None = None,
    video: str | os.PathLike[str] | None = None,
    window_px: int = DEFAULT_WINDOW_PX,
    smooth: bool = False,
    seed: int = 0,
    guidance: float | None = None,
    record_dir: str | os.PathLike[str] = "recordings",
    max_frames: int | None = None,
    on_frame=None,
    keymap: dict[str, str] | None = None,
) -> WorldSession:
    """Play a world in a window with the keyboard, or headless from a key script; returns the session.

    ``keymap`` overrides bindings of held controls to actions (``{"UP+FIRE": "UPFIRE"}``).
    ``max_frames`` ends a windowed session after that many loop iterations, and
    ``on_frame(t, session)`` runs at the start of each (for tests and demos).
    """
    if headless and not keys:
        raise WorldplayError("--headless needs --keys, e.g. --keys 'RIGHT*20,UP*10'")
    script = parse_key_script(keys, world.action_names) if keys else None
    bindings = Keymap(world.action_names, keymap)  # bad bindings are refused before anything runs
    if prompt is not None:
        frames, actions = prompt_from_image(prompt, world.frame_shape), None
    elif world.prompts is not None:
        frames, actions = world.held_out_prompt(0)
    else:
        raise WorldplayError("this world has no prompt frames; give one with --prompt image.png")
    session = WorldSession(world, frames, actions, guidance=guidance, seed=seed, record_dir=record_dir)
    shown = [session.frame]
    if headless:
        for action in script or []:
            shown.append(session.step(action))
    else:
        shown = _window_loop(
            world,
            session,
            script,
            bindings,
            window_px=window_px,
            smooth=smooth,
            max_frames=max_frames,
            on_frame=on_frame,
        )
    if video is not None:
        from worldplay.video import write_video

        scale = max(1, min(8, window_px // max(world.frame_shape[:2])))
        write_video(Path(video), shown, fps=world.fps, scale=scale)
    session.shown = shown
    return session


def _window_loop(
    world, session: WorldSession, script, keymap: Keymap, *, window_px, smooth, max_frames, on_frame
) -> list[np.ndarray]:
    fire = "FIRE" in world.action_names
    window = Window(f"worldplay: {world.meta.get('name', 'world')}", world.frame_shape, size=window_px, smooth=smooth)
    show_hud, show_help = True, False
    shown = [session.frame]
    t = 0
    try:
        while max_frames is None or t < max_frames:
            if on_frame is not None:
                on_frame(t, session)
            quit_, commands = window.poll_commands()
            if quit_:
                break
            for cmd in commands:
                if cmd == "help":
                    show_help = not show_help
                elif cmd == "hud":
                    show_hud = not show_hud
                elif cmd == "guidance_up":
                    session.change_guidance(GUIDANCE_STEP)
                elif cmd == "guidance_down":
                    session.change_guidance(-GUIDANCE_STEP)
                elif cmd == "restart":
                    session.restart()
                elif cmd == "pause" or (cmd == "space" and not fire):
                    session.toggle_pause()
                elif cmd == "rewind":
                    session.rewind()
                elif cmd == "screenshot":
                    session.record_dir.mkdir(parents=True, exist_ok=True)
                    window.screenshot(session.record_dir / f"frame-{session.frame_count:06d}-{t}.png")
                elif cmd == "record":
                    for path in session.toggle_recording():
                        print(f"wrote {path}", file=sys.stderr)
            action = _next_action(script, t, keymap, window)
            if action is None:
                break
            frame = session.step(action)
            if not session.paused:
                shown.append(frame)
            hud = session.hud(window.clock.get_fps()) if show_hud else ()
            window.show(frame, hud, help_lines(world) if show_help else ())
            window.tick(world.fps)
            t += 1
    finally:
        if session.recording is not None:
            for path in session.toggle_recording():  # a recording in progress is kept, not lost
                print(f"wrote {path}", file=sys.stderr)
        window.close()
    return shown


def load_keymap(path: str | os.PathLike[str]) -> dict[str, str]:
    """Key bindings from a TOML file's ``[keymap]`` table: ``"UP+RIGHT" = "UPRIGHT"``, ``"FIRE" = "FIRE"``."""
    import tomllib

    try:
        table = tomllib.loads(Path(path).read_text()).get("keymap")
    except FileNotFoundError:
        raise WorldplayError(f"{path}: no such keymap file") from None
    except tomllib.TOMLDecodeError as e:
        raise WorldplayError(f"{path}: not valid TOML ({e})") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise WorldplayError(f'{path}: expected a [keymap] table of "CONTROL+CONTROL" = "ACTION" strings')
    return table

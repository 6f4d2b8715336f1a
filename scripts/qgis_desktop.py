"""The real QGIS desktop under a virtual display (Xvfb), shared by the desktop tests (tests/desktop) and README's
pictures (scripts/desktop_screenshots.py).

`launch` runs outside QGIS: it starts QGIS desktop with a script, in a throw-away profile that has this checkout as
its plugin. The other functions run inside that QGIS, in the script: they do what a user does and wait for QGIS to
finish drawing, so that what they grab is what the user sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the main window's size in pictures and tests, whatever the screen
WINDOW = (1600, 1000)
#: the virtual screen: room for the main window and a dialog beside it
SCREEN = (1920, 1200)


def missing_programs() -> list[str]:
    """The programs `launch` needs that are not installed (`make setup` installs them)."""
    return [program for program in ("xvfb-run", "qgis", "qgis_process.bin") if shutil.which(program) is None]


def make_profile(profiles: Path) -> None:
    """A QGIS profiles folder whose default profile has this checkout as the enabled plugin `soc_depth_mapper`:
    QGIS rewrites the profile it starts with, so the user's own is never used."""
    plugins = profiles / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "soc_depth_mapper").symlink_to(REPO, target_is_directory=True)
    enable = subprocess.run(
        ["qgis_process.bin", "plugins", "enable", "soc_depth_mapper"],
        env={**os.environ, "QGIS_CUSTOM_CONFIG_PATH": str(profiles), "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
    )
    if enable.returncode != 0:
        raise RuntimeError(f"qgis_process.bin could not enable the plugin:\n{enable.stdout}{enable.stderr}")


def launch(code: Path, profiles: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Runs QGIS desktop on a virtual screen with the profiles of `make_profile`, executing the Python file `code`
    once QGIS is up (the file must quit QGIS); `env` is added to this process's environment."""
    environment = {**os.environ, **env, "OMP_NUM_THREADS": "1"}
    environment.pop("QT_QPA_PLATFORM", None)  # a real (virtual) display, not offscreen
    screen = f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24"
    command = ["xvfb-run", "-a", "-s", screen, "qgis", "--nologo", "--noversioncheck"]
    command += ["--profiles-path", str(profiles), "--code", str(code)]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)


# Inside QGIS desktop


def settle(milliseconds: int = 50) -> None:
    """Lets queued events run (the layer tree view and the canvas take changes on them)."""
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(milliseconds, loop.quit)
    loop.exec_()


def wait_for(signal, timeout_ms: int) -> bool:
    """Runs the event loop until `signal` is emitted (True) or `timeout_ms` have passed (False)."""
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    emitted = []
    signal.connect(lambda *_: (emitted.append(True), loop.quit()))
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec_()
    return bool(emitted)


def show_main_window(width: int, height: int) -> None:
    """The main window not maximised, at `width` × `height`: pictures of the same size on any screen."""
    from qgis.utils import iface

    window = iface.mainWindow()
    window.showNormal()
    window.move(0, 0)
    window.resize(width, height)
    settle(200)


def draw_canvas(timeout_ms: int = 60000) -> None:
    """Redraws the map canvas and waits until every layer is drawn."""
    from qgis.utils import iface

    settle()  # the canvas takes the layer tree's visible layers on a queued event
    canvas = iface.mapCanvas()
    canvas.refresh()
    if not wait_for(canvas.mapCanvasRefreshed, timeout_ms) or canvas.isDrawing():
        raise TimeoutError(f"the map canvas was still drawing after {timeout_ms / 1000:g} s")
    settle()


def zoom_to(layer) -> None:
    """Zooms the canvas to `layer`, as *Zoom to Layer* does."""
    from qgis.utils import iface

    canvas = iface.mapCanvas()
    canvas.setExtent(canvas.mapSettings().layerExtentToOutputExtent(layer, layer.extent()))


def canvas_rect() -> tuple[int, int, int, int]:
    """Where the map lies in the main window (the canvas inside its frame): left, top, width, height in the
    window's pixels."""
    from qgis.utils import iface

    view = iface.mapCanvas().viewport()
    corner = view.mapTo(iface.mainWindow(), view.rect().topLeft())
    return corner.x(), corner.y(), view.width(), view.height()


def grab(widget, path: Path, width: int | None = None) -> None:
    """Saves what `widget` shows as a PNG, scaled down to `width` pixels across where given."""
    from qgis.PyQt.QtCore import Qt

    picture = widget.grab()
    if width is not None and picture.width() > width:
        picture = picture.scaledToWidth(width, Qt.SmoothTransformation)
    if not picture.save(str(path)):
        raise OSError(f"could not write {path}")


def dialog_log(dialog) -> str:
    """The text of an algorithm dialog's Log tab."""
    from qgis.PyQt.QtWidgets import QTextEdit

    return dialog.findChild(QTextEdit, "txtLog").toPlainText()


def run_in_dialog(algorithm_id: str, parameters: dict, timeout_ms: int, size: tuple[int, int] | None = None):
    """Opens the algorithm's dialog (at `size` where given) with `parameters` filled in and presses Run, as a user
    does; returns the dialog, open on its log, once the run has finished and its results are loaded (the dialog's
    own result handling)."""
    import processing

    dialog = processing.createAlgorithmDialog(algorithm_id, parameters)
    if size is not None:
        dialog.resize(*size)
    dialog.show()
    settle()
    finished = []
    dialog.algorithmFinished.connect(lambda ok, _: finished.append(ok))
    dialog.runAlgorithm()
    if not finished and not wait_for(dialog.algorithmFinished, timeout_ms):
        raise TimeoutError(f"{algorithm_id} had not finished after {timeout_ms / 1000:g} s")
    if finished != [True]:
        raise RuntimeError(f"{algorithm_id} failed; its log:\n{dialog_log(dialog)}")
    settle()
    return dialog

"""Run one urbangeo command in a subprocess: progress to QGIS, cancel, one-line errors.

The CLI's ``--progress json`` writes one JSON record a line on stdout (``type`` start |
progress | info | finish | error, ``stage``, ``fraction``, ``message``); a failed command also
prints ``error: <one line>`` on stderr and exits non-zero.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from .command import base_command, child_environment

NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows only

#: seconds a cancelled command gets to exit on SIGTERM before SIGKILL.
TERM_GRACE_S = 5.0
_POLL_S = 0.1


class CancelledError(QgsProcessingException):
    """The user cancelled; partial outputs were removed."""


def run_urbangeo(args: Sequence[str], feedback: QgsProcessingFeedback,
                 outputs: Sequence[Path] = ()) -> None:
    """Run ``urbangeo --progress json ARGS``, its summary lines going to the log.

    ``outputs`` are the files and folders the command may create: if the user cancels, the
    ones that did not exist before and the atomic-write temp siblings (``.<stem>.*``) the
    killed process left are removed, so a cancelled run leaves nothing partial behind.
    """
    command = [*base_command(), "--progress", "json", *args]
    feedback.pushCommandInfo(shlex.join(command))
    before = {path: _snapshot(path) for path in outputs}
    # Its own session (POSIX) or process group (Windows), so cancel reaches its children too.
    # On Windows also no console window popping up from QGIS's GUI process.
    group = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | NO_WINDOW}
             if os.name == "nt" else {"start_new_session": True})
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=child_environment(), text=True,
                                   encoding="utf-8", errors="replace", **group)
    except OSError as exc:  # a configured path that is not a program (a .py, an activate...)
        raise QgsProcessingException(
            f"cannot run the urbangeo command {command[0]} ({exc.strerror or exc}): set "
            "Processing > Options > Providers > UrbanCLIP > urbangeo command to the urbangeo "
            "executable of your install (pip install urbangeo)") from exc
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def keep_stderr(line: str | None) -> None:
        if line is not None:
            stderr.append(line)

    readers = [threading.Thread(target=_pump, args=(process.stdout, lines.put), daemon=True),
               threading.Thread(target=_pump, args=(process.stderr, keep_stderr), daemon=True)]
    for reader in readers:
        reader.start()
    reporter = _Reporter(feedback)
    stdout_open = True
    while stdout_open or process.poll() is None:
        if feedback.isCanceled():
            _kill_tree(process)
            _remove_partial(before)
            raise CancelledError("Cancelled: the urbangeo process was stopped and its partial "
                                 "outputs removed.")
        try:
            line = lines.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if line is None:
            stdout_open = False
        else:
            reporter.handle(line)
    for reader in readers:
        reader.join()
    for line in stderr:  # warnings and the like; an error line also becomes the exception
        if line.strip():
            feedback.pushConsoleInfo(line)
    if process.returncode != 0:
        raise QgsProcessingException(
            _error_line(stderr, reporter.error, process.returncode))


def _pump(stream: IO[str], put: Callable[[str | None], None]) -> None:
    """Forward a pipe line by line (without newlines); ``None`` marks its end."""
    for line in stream:
        put(line.rstrip("\r\n"))
    stream.close()
    put(None)


class _Reporter:
    """Maps JSON progress records onto a QgsProcessingFeedback."""

    def __init__(self, feedback: QgsProcessingFeedback) -> None:
        self.feedback = feedback
        self.error = ""

    def handle(self, line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if line.strip():
                self.feedback.pushConsoleInfo(line)
            return
        kind, stage = record.get("type"), record.get("stage") or ""
        message = record.get("message") or ""
        fraction = record.get("fraction")
        if kind == "start":
            self.feedback.setProgressText(f"{stage}: {message}" if message else stage)
            self.feedback.setProgress(0)
        elif kind == "progress" and fraction is not None:
            self.feedback.setProgress(100.0 * float(fraction))
        elif kind == "finish":
            self.feedback.setProgress(100)
        elif kind == "info":
            self.feedback.pushInfo(message)
        elif kind == "error":
            self.error = message


def _error_line(stderr: list[str], json_error: str, returncode: int) -> str:
    """The CLI's one-line message: its ``error:`` line, else its JSON error, else stderr."""
    for line in reversed(stderr):
        if line.startswith("error: "):
            return line[len("error: "):]
    if json_error:
        return json_error
    tail = [line for line in stderr if line.strip()]
    detail = tail[-1] if tail else "no message"
    return f"urbangeo exited with status {returncode}: {detail}"


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGTERM the command's whole process group (its own session), SIGKILL if it lingers."""
    if os.name == "nt":  # no process groups to signal: taskkill walks the tree
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)],
                       capture_output=True, check=False, creationflags=NO_WINDOW)
        process.wait()
        return
    for sig, wait_s in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, TERM_GRACE_S)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    _wait_group_gone(process.pid)


def _wait_group_gone(pgid: int, timeout_s: float = TERM_GRACE_S) -> None:
    """Children (data-loader workers) may outlive the leader briefly; wait until they go."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(_POLL_S)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _snapshot(path: Path) -> tuple[bool, set[str]]:
    """Whether ``path`` exists now, and the names beside it (to spot new temp siblings)."""
    parent = path.parent
    return path.exists(), set(os.listdir(parent)) if parent.is_dir() else set()


def _remove_partial(before: dict[Path, tuple[bool, set[str]]]) -> None:
    """Remove outputs that are new since the run began and their ``.<stem>.*`` temp siblings."""
    for path, (existed, names) in before.items():
        if path.exists() and not existed:
            _remove(path)
        if not path.parent.is_dir():
            continue
        for name in set(os.listdir(path.parent)) - names:
            if name.startswith(f".{path.stem}."):
                _remove(path.parent / name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

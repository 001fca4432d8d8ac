"""Server subprocesses: started in their own process group, logged to a file, always stopped.

Each server runs under `setpriv --pdeathsig KILL`, so the kernel kills it if pytest itself
dies without running its teardown (SIGKILL, pytest-timeout's thread method).
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# Every server started this session, for the failure report in tests/conftest.py.
STARTED: list["ServerProcess"] = []


def venv_bin(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing; run `pip install -e '.[dev]'` in the venv.", pytrace=False)
    return str(path)


def _die_with_parent() -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


@dataclass
class ServerProcess:
    name: str
    # The fixture that owns this server: failures of tests using it show its log.
    fixture: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = PROJECT_ROOT
    # Seconds between SIGTERM and SIGKILL at teardown.
    stop_timeout: float = 10
    proc: subprocess.Popen | None = None
    started_at: float = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*_die_with_parent(), *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        STARTED.append(self)

    def _log(self, line: str) -> None:
        with self.log_path.open("a") as log:
            log.write(f"[harness] {line}\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe_failure(self, problem: str) -> str:
        return (
            f"{self.name}: {problem}\nlog file: {self.log_path}\n"
            f"--- last lines of the log ---\n{self.log_tail()}"
        )

    def wait_ready(self, check: Callable[[], object], *, timeout: float, what: str) -> None:
        """Poll `check` until truthy; fail the fixture at once if the process exits, or
        when `timeout` seconds pass. An exception from `check` counts as "not yet"."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            if not self.running:
                problem = f"exited with status {self.proc.returncode} while waiting for {what}"
                pytest.fail(self.describe_failure(problem), pytrace=False)
            try:
                if check():
                    self._log(
                        f"ready ({what}) {time.monotonic() - self.started_at:.1f} s after start"
                    )
                    return
            except Exception as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f"; last error: {last_error!r}" if last_error else ""
                problem = f"not ready after {timeout:g} s waiting for {what}{detail}"
                pytest.fail(self.describe_failure(problem), pytrace=False)
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after `stop_timeout` seconds."""
        if self.proc is None:
            return
        group = self.proc.pid  # start_new_session: the server leads its own group
        if self.proc.poll() is None:
            _signal_group(group, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                _signal_group(group, signal.SIGKILL)
                self.proc.wait(5)
        # Children the server left behind in its group (gunicorn workers, say).
        _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """Start `server`; stop it on the way out, also when start-up or the tests failed."""
    server.start()
    try:
        yield server
    finally:
        stopping_at = time.monotonic()
        server.stop()
        server._log(
            f"ran {stopping_at - server.started_at:.1f} s, "
            f"stopped in {time.monotonic() - stopping_at:.1f} s"
        )

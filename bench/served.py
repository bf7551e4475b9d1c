"""A server the bench runs as a subprocess: started with its output in a log, waited for until
it answers HTTP, and stopped with its children."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Served"]


class Served:
    def __init__(self, command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> None:
        self._name = Path(command[0]).name
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_until_answering(self, url: str, *, seconds: float, any_status: bool = False) -> None:
        """Until `url` answers 200 (with `any_status`, any HTTP answer at all); else RuntimeError."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self._name} exited: see {self._log.name}")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except urllib.error.HTTPError:
                if any_status:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} did not answer in {seconds:.0f} s: see {self._log.name}")

    def stop(self, *, group: bool = False, seconds: float = 15) -> None:
        """SIGTERM (to the whole process group with `group`), then SIGKILL after `seconds`."""
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

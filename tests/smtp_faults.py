"""A loopback SMTP server that misbehaves on demand, for fault injection.

Modes (``server.mode``, changeable while it runs):

- ``ok``: a plain server that accepts every message;
- ``4xx`` / ``5xx``: refuses each recipient with 451 / 550;
- ``hang``: accepts the connection and says nothing;
- ``trickle``: sends its greeting one byte every ``trickle_pause`` seconds, forever;
- ``drop``: reads the whole message after DATA, then closes without a reply;
- ``slow``: like ``ok`` but waits ``slow_pause`` seconds before accepting each message.

A server that *refuses connections* is simply a port nobody listens on (:func:`closed_port`).
Every accepted message is kept (raw bytes) in ``server.accepted``; ``server.sessions`` counts
connections.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage

from processes import HANG_GUARD_SECONDS


class FaultySmtp:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.trickle_pause = 0.2
        self.slow_pause = 1.0
        self.accepted: list[bytes] = []
        self.sessions = 0
        self.data_started = threading.Event()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ results

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            raw = list(self.accepted)
        parsed = [email.message_from_bytes(item, policy=email.policy.default) for item in raw]
        return [message for message in parsed if isinstance(message, EmailMessage)]

    def message_ids(self) -> list[str]:
        return [str(message["Message-ID"]) for message in self.messages()]

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        self._listener.close()

    # ------------------------------------------------------------------ server

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.sessions += 1
            threading.Thread(target=self._session, args=(connection,), daemon=True).start()

    def _wait(self, seconds: float) -> bool:
        """Sleep unless the server stops; True when it stopped."""
        return self._stopping.wait(seconds)

    def _session(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.5)
            with contextlib.suppress(OSError):
                self._dialog(connection)

    def _dialog(self, connection: socket.socket) -> None:
        mode = self.mode
        if mode == "hang":
            while not self._wait(0.2):
                pass
            return
        if mode == "trickle":
            while True:
                for byte in b"220 trickling greeting\r\n":
                    if self._wait(self.trickle_pause):
                        return
                    connection.sendall(bytes([byte]))
                    # never a complete reply line: it restarts, one byte at a time
                    if byte == ord("g"):
                        break
        connection.sendall(b"220 faulty.test ESMTP\r\n")
        reader = _Lines(connection, self._stopping)
        while True:
            line = reader.line()
            if line is None:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                connection.sendall(b"250 faulty.test\r\n")
            elif verb == b"MAIL":
                connection.sendall(b"250 2.1.0 OK\r\n")
            elif verb == b"RCPT":
                if self.mode == "4xx":
                    connection.sendall(b"451 4.3.0 Temporary failure, try later\r\n")
                elif self.mode == "5xx":
                    connection.sendall(b"550 5.1.1 No such user here\r\n")
                else:
                    connection.sendall(b"250 2.1.5 OK\r\n")
            elif verb == b"DATA":
                connection.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.data_started.set()
                content = reader.data()
                if content is None:
                    return
                if self.mode == "drop":
                    return  # closes the connection: the client never hears back
                if self.mode == "slow" and self._wait(self.slow_pause):
                    return
                with self._lock:
                    self.accepted.append(content)
                connection.sendall(b"250 2.0.0 Accepted\r\n")
            elif verb == b"RSET" or verb == b"NOOP":
                connection.sendall(b"250 OK\r\n")
            elif verb == b"QUIT":
                connection.sendall(b"221 Bye\r\n")
                return
            else:
                connection.sendall(b"502 5.5.2 Command not implemented\r\n")


class _Lines:
    def __init__(self, connection: socket.socket, stopping: threading.Event) -> None:
        self.connection = connection
        self.stopping = stopping
        self.buffer = b""

    def _fill(self) -> bool:
        while not self.stopping.is_set():
            try:
                chunk = self.connection.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return False
            self.buffer += chunk
            return True
        return False

    def line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                return None
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def data(self) -> bytes | None:
        while b"\r\n.\r\n" not in self.buffer:
            if not self._fill():
                return None
        content, _, self.buffer = self.buffer.partition(b"\r\n.\r\n")
        lines = [line[1:] if line.startswith(b"..") else line for line in content.split(b"\r\n")]
        return b"\r\n".join(lines) + b"\r\n"


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    condition: Callable[[], object], guard_seconds: float = HANG_GUARD_SECONDS, pause: float = 0.05
) -> None:
    """Wait until ``condition()`` is true; the guard only catches a hang (no timing)."""
    deadline = time.monotonic() + guard_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: still waiting after {guard_seconds} s")
        time.sleep(pause)

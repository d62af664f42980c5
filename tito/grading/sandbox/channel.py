"""The grader's side of a kernel's messaging: the connection file, two sockets, signed requests
with random ids, and polling that never holds a message above the size cap."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from queue import Empty

from tito.grading.sandbox.launch import KERNEL_OUTPUT_COUNT_SLACK


def write_connection_file(folder: Path, uid) -> Path:
    "The kernel's connection file in `folder` (IPC sockets there, a fresh key), readable by `uid`."
    from jupyter_client.connect import write_connection_file as write

    connection = Path(folder) / "kernel.json"
    write(str(connection), transport="ipc", ip=str(Path(folder) / "ipc"), key=secrets.token_hex(32).encode())
    if uid is not None:
        os.chown(connection, uid, uid)   # written 0600 by jupyter_client, for the kernel to read
    return connection


class KernelChannel:
    """Our own two sockets to a kernel (no stdin, control or heartbeat): shell for requests and
    replies, iopub for what the kernel publishes."""

    def __init__(self, connection: Path, limits):
        import zmq
        from jupyter_client.channels import ZMQSocketChannel
        from jupyter_client.session import Session

        info = json.loads(Path(connection).read_text())
        self.session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
        self.context = zmq.Context()
        shell = self.context.socket(zmq.DEALER)
        iopub = self.context.socket(zmq.SUB)
        iopub.setsockopt(zmq.SUBSCRIBE, b"")
        # Both sockets refuse a message above a few times the output cap: a giant traceback must
        # not exhaust the grader's memory either (a cell whose reply is refused counts as failed).
        self.max_message = 8 * int(limits.max_output_bytes) + 2**20
        for socket in (shell, iopub):
            socket.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        # Room for every output the kernel forwards (it stops a little past the count cap), so that
        # none is dropped while this process is busy: the count cut does not depend on the load.
        iopub.setsockopt(zmq.RCVHWM, max(1000, int(limits.max_outputs) + KERNEL_OUTPUT_COUNT_SLACK + 200))
        for socket, port in ((shell, info["shell_port"]), (iopub, info["iopub_port"])):
            socket.linger = 0
            socket.connect(f"ipc://{info['ip']}-{port}")
        self.shell = ZMQSocketChannel(shell, self.session)
        self.iopub = ZMQSocketChannel(iopub, self.session)
        # Refusing a message drops the connection for good (zmq does not bring it back): the
        # monitors say so, and the kernel is then stopped like one that crashed.
        self.monitors = [socket.get_monitor_socket(zmq.EVENT_DISCONNECTED) for socket in (shell, iopub)]
        self.poller = zmq.Poller()
        for socket in (iopub, shell, *self.monitors):
            self.poller.register(socket, zmq.POLLIN)

    def request(self, msg_type: str, content: dict) -> str:
        "Send a shell request; return its msg_id."
        # jupyter_client numbers msg_ids (session_pid_count): code in one cell could predict the
        # id of the next and publish output under it. A random id cannot be guessed.
        header = self.session.msg_header(msg_type)
        header["msg_id"] = secrets.token_hex(16)
        msg = self.session.msg(msg_type, content, header=header)
        self.shell.send(msg)
        return header["msg_id"]

    def poll(self, timeout: float) -> list:
        """Messages ready within `timeout` seconds, as (channel name, message); a dropped
        connection is ("disconnected", None). Unsigned or malformed messages are ignored."""
        ready = dict(self.poller.poll(max(0, int(timeout * 1000))))
        found = []
        for monitor in self.monitors:
            if monitor in ready:
                while monitor.poll(0):
                    monitor.recv_multipart()
                    found.append(("disconnected", None))
        for name, channel in (("iopub", self.iopub), ("shell", self.shell)):
            if channel.socket in ready:
                while channel.msg_ready():
                    try:
                        found.append((name, channel.get_msg(timeout=0)))
                    except Empty:
                        break
                    except Exception:
                        continue   # an unsigned or malformed message: ignore it
        return found

    def close(self) -> None:
        for channel, monitor in zip((self.shell, self.iopub), self.monitors):
            try:
                channel.socket.disable_monitor()
            except Exception:
                pass
            monitor.close(linger=0)
            channel.close()
        try:
            self.context.destroy(linger=0)
        except Exception:
            pass

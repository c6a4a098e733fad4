"""Separate hosts on one machine for the multi-host tests and benchmark: Linux network
namespaces, each joined by a veth pair to one bridge, with addresses from the
documentation range 198.51.100.0/24 (RFC 5737). The bridge itself has 198.51.100.1 so this
process can reach the hosts; no namespace has a route anywhere else.

Every name carries a tag unique to the run; `Network.close` kills what was started in the
hosts and removes the namespaces and the bridge, whatever happened before. HAProxy runs
in a host of its own from the template in deploy/haproxy/.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_TEMPLATE = ROOT / "deploy" / "haproxy" / "haproxy.cfg.template"
HASHMATCH = str(Path(sys.executable).parent / "hashmatch")
SUBNET = "198.51.100"
PORT = 50051


def unavailable() -> str | None:
    """Why hosts cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2)"
    if shutil.which("haproxy") is None:
        return "needs HAProxy (Debian package haproxy; scripts/setup.sh installs it as root)"
    if not Path(HASHMATCH).exists():
        return "the hashmatch command is not installed in this environment"
    probe = f"hmprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str, namespace: str | None = None, check: bool = True) -> None:
    argv = ["ip", *args] if namespace is None else ["ip", "-n", namespace, *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


@dataclass
class Host:
    """One namespace with one address; the processes started in it."""

    name: str
    namespace: str
    address: str
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{PORT}"

    def start(self, argv: Sequence[str], log_name: str) -> subprocess.Popen[bytes]:
        """Runs `argv` in this host, stdout and stderr to a log file of its own."""
        log = self.log_path(log_name).open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.processes.append(proc)
        return proc

    def log_path(self, log_name: str) -> Path:
        return self.logs / f"{self.name}-{log_name}.log"

    def serve(self, data_dir: Path, *extra: str, log_name: str = "hashmatch") -> Server:
        """`hashmatch serve` on this host's address; returns once it serves."""
        log = self.log_path(log_name)
        start = log.stat().st_size if log.exists() else 0
        argv = [HASHMATCH, "serve", "--data-dir", str(data_dir), "--listen", self.endpoint]
        proc = self.start([*argv, "--log-format", "text", *extra], log_name)
        server = Server(self, proc, data_dir, log)
        wait_for(
            lambda: (
                f"hashmatch serving on {self.endpoint}" in server.log_text(start)
                or proc.poll() is not None
            ),
            f"hashmatch serving on {self.endpoint}",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"hashmatch serve exited on {self.name}: {server.log_text(start)}")
        return server

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Runs a command in this host to its end."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def cut(self, other: Host) -> None:
        """Partitions this host from `other`: every packet between them is dropped (a
        blackhole route on each side)."""
        ip("route", "add", "blackhole", f"{other.address}/32", namespace=self.namespace)
        ip("route", "add", "blackhole", f"{self.address}/32", namespace=other.namespace)

    def heal(self, other: Host) -> None:
        ip("route", "del", "blackhole", f"{other.address}/32", namespace=self.namespace)
        ip("route", "del", "blackhole", f"{self.address}/32", namespace=other.namespace)


@dataclass
class Server:
    host: Host
    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

    def log_text(self, start: int = 0) -> str:
        with self.log.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Sends `sig` and waits for the process to end; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)


class Network:
    """A bridge and the hosts on it; `close` undoes everything."""

    def __init__(self, logs: Path) -> None:
        self.tag = f"{os.getpid() % 100000:05d}{int(time.time()) % 1000:03d}"
        self.bridge = f"hmb{self.tag}"
        self.logs = logs
        self.hosts: list[Host] = []
        self.links: list[str] = []
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{SUBNET}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add(self, name: str, octet: int) -> Host:
        namespace = f"hm{self.tag}-{name}"
        outside, inside = f"hmv{self.tag}{len(self.hosts)}", f"hmp{self.tag}{len(self.hosts)}"
        ip("netns", "add", namespace)
        host = Host(name, namespace, f"{SUBNET}.{octet}", self.logs)
        self.hosts.append(host)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        self.links.append(outside)
        ip("link", "set", inside, "netns", namespace)
        ip("link", "set", outside, "master", self.bridge)
        ip("link", "set", outside, "up")
        ip("link", "set", "lo", "up", namespace=namespace)
        ip("link", "set", inside, "name", "eth0", namespace=namespace)
        ip("addr", "add", f"{host.address}/24", "dev", "eth0", namespace=namespace)
        ip("link", "set", "eth0", "up", namespace=namespace)
        return host

    def close(self) -> None:
        for host in self.hosts:
            for proc in host.processes:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        # Deleting one end of a veth pair deletes both at once (a namespace's own teardown
        # may finish long after `ip netns del`).
        for link in self.links:
            ip("link", "del", link, check=False)
        for host in self.hosts:
            ip("netns", "del", host.namespace, check=False)
        ip("link", "del", self.bridge, check=False)


def reachable(address: str, port: int = PORT) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Polls until `check` holds; the bound only stops a broken build from hanging."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"never happened within {limit:g} s: {what}")
        time.sleep(0.05)


class Balancer:
    """HAProxy in a host of its own, configured from deploy/haproxy/, in front of replicas."""

    BACKEND = "replicas"

    def __init__(
        self, host: Host, replicas: Sequence[Host], workdir: Path, check_interval: str = "200ms"
    ) -> None:
        self.host = host
        self.socket = workdir / "haproxy.sock"
        config = string.Template(HAPROXY_TEMPLATE.read_text()).substitute(
            listen=host.endpoint,
            stats_socket=str(self.socket),
            check_interval=check_interval,
            servers="\n".join(f"    server {r.name} {r.endpoint}" for r in replicas),
        )
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(config)
        checked = subprocess.run(
            ["haproxy", "-c", "-f", str(self.config)], capture_output=True, text=True
        )
        if checked.returncode != 0:
            raise RuntimeError(f"HAProxy refuses the rendered template: {checked.stderr}")
        self.process = host.start(["haproxy", "-db", "-f", str(self.config)], "haproxy")
        wait_for(lambda: self.socket.exists() and reachable(host.address), "HAProxy listening")

    @property
    def endpoint(self) -> str:
        return self.host.endpoint

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, str]:
        """Each replica's state as HAProxy sees it: "UP", "DOWN", or a transition such as
        "DOWN 1/2"."""
        text = self.command("show stat").lstrip("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == self.BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

"""Hosts on one machine: Linux network namespaces on one switch, and the stack spread over them.

Each host is a namespace `cxrq-<pid>-<host>` with one interface, `eth0`, whose other end is a port
named after the host on a bridge in a namespace of its own (`cxrq-<pid>-sw`). The hosts share one
/24 (SUBNET); every address lives inside these namespaces, so the machine's own network is never
touched. A process runs on a host through `ip netns exec`, in a UTS namespace whose hostname is
the host's name (worker ids, which start with the hostname, say where a worker runs); a thread
of this process visits a host with `Network.inside()`. `Network.cut()` pulls a host's cable at
the switch: its interface loses carrier and its packets are dropped, so its TCP connections see
only silence, as across a real switch, until `Network.mend()`.

The filesystem stays shared: the media folder plays the shared volume (NFS, object storage) that
web and worker hosts mount in a real deployment.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from loadtest.stack import ROOT, port_open, wait_for
from tests.reliability.harness import Stack

NAME_PREFIX = "cxrq-"
SUBNET = "10.231.16"  # .0/24, inside the namespaces only
_OURS = re.compile(rf"^{NAME_PREFIX}(\d+)-[a-z0-9]+$")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def postgres_bin_dir() -> str | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's versioned folder (newest first)."""
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return str(Path(shutil.which("initdb") or "").parent)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return str(Path(found[-1]).parent) if found else None


def unavailable_reason() -> str | None:
    """Why hosts cannot be made here (None when they can): root, iproute2 with namespaces and
    bridges, util-linux, PostgreSQL's server binaries, Redis."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add); run `make test` as root"
    missing = [
        package
        for tool, package in (
            ("ip", "iproute2"),
            ("unshare", "util-linux"),
            ("runuser", "util-linux"),
            ("redis-server", "redis-server"),
            ("redis-cli", "redis-tools"),
        )
        if shutil.which(tool) is None
    ]
    if postgres_bin_dir() is None:
        missing.append("postgresql")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing.append("postgresql")
    if missing:
        return f"missing tools: apt-get install {' '.join(sorted(set(missing)))}"
    probe = f"{NAME_PREFIX}{os.getpid()}-probe"
    added = _ip("netns", "add", probe, check=False)
    if added.returncode:
        return f"`ip netns add` is not permitted here ({added.stderr.strip()}): needs CAP_SYS_ADMIN"
    try:
        bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if bridge.returncode:
            return f"cannot create a bridge in a namespace ({bridge.stderr.strip()})"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _kill_all_in(namespace: str) -> None:
    """SIGKILL every process still in the namespace (ours: started by these tests)."""
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = _ip("netns", "pids", namespace, check=False).stdout.split()
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers() -> list[str]:
    """Remove the namespaces (and their processes) of earlier runs that died without cleaning
    up: those named NAME_PREFIX<pid>-… whose pid is no longer running."""
    swept = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _OURS.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            _kill_all_in(name)
            _ip("netns", "del", name, check=False)
            swept.append(name)
    return swept


class Network:
    """Hosts on one switch. `create()` builds them, `destroy()` kills what runs on them and
    deletes every namespace, whatever state an interrupted test left them in."""

    def __init__(self, hosts: Sequence[str]):
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-"
        self.hosts = list(hosts)
        self.switch = f"{self.prefix}sw"
        self.addresses = {host: f"{SUBNET}.{i + 1}" for i, host in enumerate(self.hosts)}
        self.cidr = f"{SUBNET}.0/24"
        self._made: list[str] = []

    def namespace(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def address(self, host: str) -> str:
        return self.addresses[host]

    def create(self) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts:
            ns = self.namespace(host)
            self._add_namespace(ns)
            # Made in place: neither end ever appears in the machine's own namespace.
            _ip("-n", self.switch, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.switch, "link", "set", host, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addresses[host]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def destroy(self) -> None:
        for name in reversed(self._made):
            _kill_all_in(name)
            _ip("netns", "del", name, check=False)
        self._made.clear()

    def prefix_for(self, host: str) -> list[str]:
        """The command prefix that runs a program on `host`, as a process of that host."""
        set_hostname = 'echo "$0" > /proc/sys/kernel/hostname && exec "$@"'
        ns = self.namespace(host)
        return ["ip", "netns", "exec", ns, "unshare", "--uts", "--", "sh", "-c", set_hostname, host]

    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """This thread on `host`'s network: sockets made meanwhile belong to that host (and stay
        there when the thread comes back)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.namespace(host)}", os.O_RDONLY)
        try:
            _setns(there)
            yield
        finally:
            _setns(home)
            os.close(there)
            os.close(home)

    def cut(self, host: str) -> None:
        """Pull `host`'s cable at the switch."""
        _ip("-n", self.switch, "link", "set", host, "down")

    def mend(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", host, "up")


class HostStack(Stack):
    """The reliability stack with each process on a host of `network`: a process runs on the host
    named as it is (`start_web()` on "web", `start_worker("w1")` on "w1"), management commands
    on `admin_host`, and this test's HTTP requests come from `client_host`."""

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        broker_url: str,
        *,
        network: Network,
        admin_host: str = "web",
        client_host: str = "client",
        **env: str,
    ):
        super().__init__(workdir, database_url, broker_url, **env)
        self.net, self.admin_host, self.client_host = network, admin_host, client_host

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        return super().spawn(name, [*self.net.prefix_for(name), *cmd], env)

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [*self.net.prefix_for(self.admin_host), sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and out.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr[-3000:]}")
        return out

    def start_web(self, threads: int = 8, workers: int = 1, port: int = 8000) -> str:
        from backend.edge.server import server_argv

        address = self.net.address("web")
        self.env["DJANGO_ALLOWED_HOSTS"] = address
        self.spawn("web", server_argv(f"{address}:{port}", workers=workers))
        self.web_url = f"http://{address}:{port}"

        def listening() -> bool:
            with self.net.inside(self.client_host):
                return port_open(port, address)

        wait_for(listening, 60, what="web")
        return self.web_url

    def start_workers(self, *hosts: str, **env: str) -> dict[str, subprocess.Popen]:
        """One worker on each host, started side by side."""
        with ThreadPoolExecutor(len(hosts)) as pool:
            started = {host: pool.submit(self.start_worker, host, **env) for host in hosts}
        return {host: future.result() for host, future in started.items()}

    def upload(self, data: bytes, name: str = "x.png", **headers: str) -> requests.Response:
        with self.net.inside(self.client_host):
            return super().upload(data, name, **headers)

    def job(self, job_id: str) -> dict:
        with self.net.inside(self.client_host):
            return super().job(job_id)

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGTERM every process group, then SIGKILL what is left after `grace` seconds (a host
        that was cut off may be waiting on a dead connection)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

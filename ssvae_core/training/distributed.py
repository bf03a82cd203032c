"""Training in several processes — one per host, say — through ``jax.distributed``.

Every process runs the same command. ``initialize`` connects them before JAX computes
anything; from then on ``jax.devices()`` lists every process's devices, and
``ssvae_core.training.data_mesh`` lays the data-parallel mesh over all of them: each
process's devices compute their part of every global batch, and parameters, optimiser
state and τ counts stay replicated, so the result is the one process's result with the
same global batch. Process 0 writes the run directory; the others write nothing.

The options come from the command line (``--distributed``, ``--coordinator``,
``--num-processes``, ``--process-id``, ``--coordinator-timeout``) or from the environment
(``SSVAE_DISTRIBUTED``, ``SSVAE_COORDINATOR``, ``SSVAE_NUM_PROCESSES``,
``SSVAE_PROCESS_ID``, ``SSVAE_COORDINATOR_TIMEOUT``); a flag wins over its variable.
They are options of the launch, not of the run: every process has its own process id, and
a run resumed later may run elsewhere, so none of them goes into ``config.toml``. With
``mode = "auto"`` whatever is not given is left to JAX's own detection of the cluster
(SLURM, Open MPI, Cloud TPU; ``JAX_COORDINATOR_ADDRESS``); without any of them nothing is
initialised and training stays in one process.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssvae_core.errors import ConfigError, SSVAEError
from ssvae_core.options import option, parse_options

MODES = ("off", "auto")
# option name → (environment variable, command-line flag)
SOURCES = {
    "mode": ("SSVAE_DISTRIBUTED", "--distributed"),
    "coordinator": ("SSVAE_COORDINATOR", "--coordinator"),
    "num_processes": ("SSVAE_NUM_PROCESSES", "--num-processes"),
    "process_id": ("SSVAE_PROCESS_ID", "--process-id"),
    "timeout": ("SSVAE_COORDINATOR_TIMEOUT", "--coordinator-timeout"),
}
_CLUSTER = ("coordinator", "num_processes", "process_id")


@dataclass(frozen=True)
class DistributedOptions:
    mode: str = option(
        "off",
        help="'auto' connects the processes through jax.distributed (what is not given is detected by JAX: SLURM, Open MPI, Cloud TPU); 'off' trains in this process alone. Giving a coordinator, a process count or a process id implies 'auto'",
        choices=MODES,
    )
    coordinator: str | None = option(
        None, help="HOST:PORT of process 0, where it serves the coordinator and the others connect"
    )
    num_processes: int | None = option(None, help="how many processes train together", minimum=1)
    process_id: int | None = option(
        None, help="this process's number, 0 to num_processes − 1 (process 0 writes the run)", minimum=0
    )
    timeout: int = option(
        300, help="seconds to wait for every process to reach the coordinator", minimum=1
    )

    def validate(self) -> None:
        if self.num_processes is not None and self.process_id is not None:
            if self.process_id >= self.num_processes:
                raise ValueError(
                    f"process_id must be below the number of processes, {self.num_processes} "
                    f"(0 to {self.num_processes - 1}), got {self.process_id}"
                )
        if self.mode == "off":
            given = [name for name in _CLUSTER if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"mode is 'off', but {', '.join(given)} "
                    f"{'asks' if len(given) == 1 else 'ask'} for several processes"
                )
        if self.coordinator is not None:
            host, colon, port = self.coordinator.rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"coordinator must be HOST:PORT (a port from 1 to 65535), got {self.coordinator!r}"
                )
            if not _valid_host(host):
                raise ValueError(
                    f"coordinator host {host!r} is not a host name (letters, digits, '-' and '.'), "
                    "an IPv4 address or an IPv6 address in brackets"
                )

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)", re.ASCII)


def _valid_host(host: str) -> bool:
    """Whether ``host`` is a DNS name, an IPv4 address or a bracketed IPv6 address."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(part) for part in name.split("."))


def distributed_options(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> DistributedOptions:
    """The options from ``environ`` (default ``os.environ``), then ``flags`` (the options'
    names; ``None`` values are not given). A coordinator, process count or process id
    without a mode means ``"auto"``."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}  # where each value came from, for the messages
    for name, (variable, _) in SOURCES.items():
        text = environ.get(variable, "").strip()
        if not text:
            continue
        origin[name] = variable
        if name in ("num_processes", "process_id", "timeout"):
            try:
                raw[name] = int(text)
            except ValueError:
                raise ConfigError(f"{variable} must be an integer, got {text!r}") from None
        else:
            raw[name] = text
    for name, value in (flags or {}).items():
        if value is not None:
            raw[name] = value
            origin[name] = SOURCES[name][1] if name in SOURCES else name
    if "mode" not in raw and any(name in raw for name in _CLUSTER):
        raw["mode"] = "auto"
    try:
        return parse_options(DistributedOptions, raw, "distributed")
    except ConfigError as error:
        message = str(error)
        for name in sorted(SOURCES, key=len, reverse=True):  # num_processes before process_id
            given = origin.get(name, SOURCES[name][1])
            message = message.replace(f"distributed.{name}", given).replace(f" {name}", f" {given}")
        raise ConfigError(message) from None


def initialize(options: DistributedOptions) -> bool:
    """Connect this process to the others (``jax.distributed.initialize``) when
    ``options`` ask for it; returns whether it did. Must come before JAX computes anything
    (before a model is built); a problem — a missing coordinator, no answer from it within
    ``options.timeout`` seconds — is a ``ConfigError``."""
    if not options.enabled:
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    if jax.config.jax_cpu_collectives_implementation is None:
        # CPU devices of different processes exchange their all-reduces over TCP (gloo)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = options.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if options.coordinator is not None and options.process_id is not None and (options.num_processes or 1) > 1:
        # Every process known: meet first, so that a missing or unreachable process is an
        # error here rather than an abort inside the runtime after its timeout.
        rendezvous(options.coordinator, options.num_processes or 1, options.process_id, options.timeout)
    try:
        jax.distributed.initialize(
            coordinator_address=options.coordinator,
            num_processes=options.num_processes,
            process_id=options.process_id,
            initialization_timeout=options.timeout,
        )
    except (ValueError, TypeError) as error:
        raise ConfigError(_missing(str(error))) from None
    except Exception as error:  # the runtime's own errors: started too late, no answer
        if isinstance(error, RuntimeError) and "must be called before" in str(error):
            raise ConfigError(
                "distributed training must be set up before JAX computes anything: call "
                "ssvae_core.training.distributed.initialize first"
            ) from None
        with contextlib.suppress(Exception):
            jax.distributed.shutdown()
        detail = " ".join(str(error).split())[:300]
        raise ConfigError(
            f"distributed training: could not connect to the coordinator at {where or '?'} "
            f"within {options.timeout} s (is process 0 running, is the address reachable "
            f"from this host and the port free on process 0's?): {detail}"
        ) from None
    return True


HELLO = "ssvae-distributed 1"


def _host_port(coordinator: str) -> tuple[str, int]:
    host, _, port = coordinator.rpartition(":")
    return host.strip("[]"), int(port)


def rendezvous(coordinator: str, num_processes: int, process_id: int, timeout: float) -> None:
    """Meet every process at the coordinator's port before ``jax.distributed`` does: each
    process tells process 0 its id and the count it was given, and process 0 answers once
    all are there. A process that never arrives, a coordinator no one can reach, two
    processes with one id or disagreeing counts are a ``ConfigError`` on every process
    that took part; the port is free again afterwards, for the coordinator service."""
    deadline = time.monotonic() + timeout
    if process_id == 0:
        _gather(coordinator, num_processes, deadline, timeout)
    else:
        _join(coordinator, num_processes, process_id, deadline, timeout)


def _gather(coordinator: str, num_processes: int, deadline: float, timeout: float) -> None:
    _, port = _host_port(coordinator)
    try:
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            server = socket.create_server(("", port))
    except OSError as error:
        raise ConfigError(
            f"distributed training: process 0 cannot serve the coordinator on port {port} "
            f"({error.strerror or error}); choose a free port for --coordinator"
        ) from None
    arrived: dict[int, socket.socket] = {}
    problem = ""
    try:
        while len(arrived) < num_processes - 1 and not problem:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [str(i) for i in range(1, num_processes) if i not in arrived]
                problem = (
                    f"only {len(arrived) + 1} of {num_processes} processes reached the coordinator "
                    f"at {coordinator} within {timeout:g} s (missing process id "
                    f"{', '.join(missing)}); start every process with the same --coordinator and "
                    "--num-processes"
                )
                break
            server.settimeout(remaining)
            try:
                connection, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            connection.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
            words = _read_line(connection).split()
            if " ".join(words[:2]) != HELLO or len(words) != 4 or not all(w.isdigit() for w in words[2:]):
                connection.close()  # not one of ours
                continue
            their_id, their_count = int(words[2]), int(words[3])
            if their_count != num_processes:
                problem = (
                    f"process {their_id} was told --num-processes {their_count}, process 0 "
                    f"{num_processes}; give every process the same count"
                )
            elif their_id in arrived:
                problem = f"two processes were given --process-id {their_id}; each needs its own"
            arrived.setdefault(their_id, connection)
            if connection is not arrived[their_id]:
                _answer(connection, problem)
        for connection in arrived.values():
            _answer(connection, problem)
    finally:
        server.close()
    if problem:
        raise ConfigError(f"distributed training: {problem}")


def _answer(connection: socket.socket, problem: str) -> None:
    """``go``, or ``stop`` with the reason; then wait for the process to hang up first (so
    that the port is not held in TIME_WAIT on this side)."""
    try:
        connection.sendall((f"stop {problem}" if problem else "go").encode() + b"\n")
        connection.settimeout(5.0)
        while connection.recv(256):
            pass
    except OSError:
        pass
    finally:
        connection.close()


def _join(coordinator: str, num_processes: int, process_id: int, deadline: float, timeout: float) -> None:
    host, port = _host_port(coordinator)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConfigError(
                f"distributed training: could not reach the coordinator at {coordinator} within "
                f"{timeout:g} s; start process 0 there (the coordinator), check that this host "
                "can reach that address, or wait longer with --coordinator-timeout"
            )
        try:
            connection = socket.create_connection((host, port), timeout=min(remaining, 5.0))
            break
        except OSError:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    with connection:
        try:
            connection.sendall(f"{HELLO} {process_id} {num_processes}\n".encode())
            connection.settimeout(max(0.1, deadline - time.monotonic()))
            answer = _read_line(connection)
        except OSError:
            answer = ""
    if answer == "go":
        return
    if answer.startswith("stop "):
        raise ConfigError(f"distributed training: {answer[5:]}")
    raise ConfigError(
        f"distributed training: the coordinator at {coordinator} did not answer within "
        f"{timeout:g} s (not every process arrived, or something else listens there)"
    )


def _read_line(connection: socket.socket) -> str:
    data = b""
    try:
        while not data.endswith(b"\n") and len(data) < 1024:
            chunk = connection.recv(1024 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data.decode("utf-8", "replace").strip()


def _missing(message: str) -> str:
    hint = "or launch under SLURM, Open MPI or on Cloud TPU, where JAX detects it"
    if "coordinator" in message:
        return (
            "distributed training needs the coordinator's address: --coordinator HOST:PORT "
            f"(SSVAE_COORDINATOR), the same for every process, {hint}"
        )
    if "Number of processes" in message:
        return f"distributed training needs the number of processes: --num-processes N (SSVAE_NUM_PROCESSES), {hint}"
    if "process id" in message:
        return (
            "distributed training needs this process's id: --process-id I "
            f"(SSVAE_PROCESS_ID), 0 on the coordinator's host, {hint}"
        )
    return f"distributed training: {message}"


class PeerStopped(SSVAEError):
    """Another process of the same distributed training stopped (its own output says
    why); this one stops with it instead of waiting for it."""


def process_count() -> int:
    """How many processes train together (1 without ``initialize``)."""
    import jax

    return int(jax.process_count())


def is_main_process() -> bool:
    """Whether this process writes: process 0, or the only one."""
    import jax

    return int(jax.process_index()) == 0


def all_agree(ok: bool) -> bool:
    """Whether every process passes ``ok = True`` (each must call it, at the same point);
    in one process, ``ok`` itself."""
    if process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(1 if ok else 0, dtype=np.int32))
    return bool(np.all(np.asarray(flags) == 1))

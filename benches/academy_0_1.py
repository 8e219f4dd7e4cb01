"""Python Academy 0.1.0's HybridExchange, measured with the payloads of our Rust bench.

This is the reference side of `benches/exchange.rs`: it runs the real
`academy-py==0.1.0` (no copy, no patch) so the Rust bench can print these rows
beside its own. What it measures, each with p50, p99 and mean in microseconds:

- bench "action round trip", variants "echo 100B direct" ... "echo 10MB direct":
  a client handle of one HybridExchange calls the `echo` action of an agent
  served by another HybridExchange (same Redis, same namespace, same process).
  The agent is online, so both the request and the response go peer to peer
  over TCP; the bench checks that they did (no RPUSH while measuring).
- variants "echo 100B redis" ... "echo 10MB redis": the same calls with the
  direct path disabled on both exchanges, so both the request and the
  response go through the Redis queues (see `RedisOnlyHybridExchange`).
- bench "startup", variant "launch to first action (each of N)": from
  launching a new agent (register, start its thread) to the answer of its
  first action, called from the other exchange; N agents stay up until the end.

Sizes are 100 B, 10 KB (10,000 B), 1 MiB and 10 MiB of bytes, as in the Rust
bench; samples are 1000, 1000, 50 and 10 (with --quick 200, 200, 20 and 5),
after an untimed warm-up of 10% (at least 2). N is 100 (30 with --quick).

Output: one JSON object per line on stdout, one per measurement, in the Rust
bench's format; progress and diagnostics go to stderr. Exit status 0 on
success, 1 with a message on stderr on any failure.

Run it through `benches/academy-0.1`, which makes the venv with academy-py
0.1.0, against a private Redis (never 127.0.0.1:6379), pinned to one core as
the reference figures in SPEC.md are:

    taskset -c 0 benches/academy-0.1 --redis-url redis://127.0.0.1:PORT [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import ipaddress
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Callable
from typing import Iterator

IMPL = 'academy-0.1.0'
ACADEMY_VERSION = '0.1.0'

SIZES = [('100B', 100), ('10KB', 10_000), ('1MB', 1 << 20), ('10MB', 10 << 20)]
SAMPLES = {'100B': 1000, '10KB': 1000, '1MB': 50, '10MB': 10}
QUICK_SAMPLES = {'100B': 200, '10KB': 200, '1MB': 20, '10MB': 5}
STARTUP_AGENTS, QUICK_STARTUP_AGENTS = 100, 30

# No call should take this long; 0.1.0 can lose a message (SPEC.md, defect 7)
# and would then wait forever, so a call past this fails the run instead.
ACTION_TIMEOUT_S = 60.0
# Shutting everything down should take seconds; past this the process exits
# anyway (with status 1) rather than hang on a stuck thread.
CLEANUP_TIMEOUT_S = 60.0
# academy-py 0.1.0 does not pin redis-py, and redis-py releases since 0.1.0
# cap a connection pool at 100 connections by default (it was 2**31). Every
# mailbox's watcher thread holds one of its exchange's connections in BLPOP,
# so 100 agents on one exchange hit the cap (MaxConnectionsError while they
# shut down). The bench gives the pool the old bound, through 0.1.0's own
# `redis_kwargs`.
REDIS_MAX_CONNECTIONS = 2**31


def log(message: str) -> None:
    print(f'academy_0_1: {message}', file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure that ends the run with a message and exit status 1."""


# ------------------------------------------------------------- academy 0.1.0

try:
    from academy.behavior import action
    from academy.behavior import Behavior
    from academy.exchange.hybrid import HybridExchange
    from academy.exchange.hybrid import uuid_to_base32
    from academy.launcher.thread import ThreadLauncher
    from academy.message import Message
    from academy.message import RequestMessage
    from academy.multiplex import MailboxMultiplexer
    import redis
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.exit(
        f'academy_0_1: cannot import academy-py {ACADEMY_VERSION} ({e}); '
        'run this through benches/academy-0.1, which makes its venv',
    )


class Echo(Behavior):
    """An agent whose one action gives back what it is sent."""

    @action
    def echo(self, payload: bytes | str) -> bytes | str:
        return payload


class RedisOnlyHybridExchange(HybridExchange):
    """A stock HybridExchange whose peer-to-peer send always fails.

    0.1.0 has no option to turn the direct path off: its constructor takes
    only the Redis host and port, the interface, the namespace and extra
    Redis arguments. But its `send()` falls back to the Redis queue whenever
    the peer has no published address or the direct send raises `OSError`.
    Making `_send_direct` raise sends every message down that stock fallback,
    unchanged: GET status, GET address, the (failed) direct attempt, RPUSH
    onto `ns:queue:<b32>`, where the receiving mailbox's watcher thread is
    blocked in BLPOP. That is the same sequence of Redis commands as a send
    to a peer with no address (an offline one), and since the failed attempt
    never fills the address cache, it is taken for every message. Both
    exchanges of the "redis" rows are of this kind, so the agent's responses
    take the queue too, like our bench's `peer_to_peer(false)` on both sides.
    The mailboxes still start their TCP listeners; nothing dials them.
    Deleting the published address keys instead would do the same, but
    races with the agent thread that publishes its address.
    """

    def _send_direct(self, address: str, message: Message) -> None:
        raise OSError('direct path disabled by the bench (Redis path forced)')


# ------------------------------------------------------------- plumbing


@dataclass
class RedisConfig:
    host: str
    port: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> RedisConfig:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != 'redis':
            raise BenchError(f'--redis-url must be redis://HOST:PORT, got {url!r}')
        try:
            port = parts.port
        except ValueError:
            raise BenchError(f'bad port in --redis-url {url!r}') from None
        if port is None:
            raise BenchError(f'--redis-url {url!r} has no port: pass the private Redis\'s port')
        host = parts.hostname or '127.0.0.1'
        if port == 6379 and _is_loopback(host):
            raise BenchError(
                f'refusing {host}:6379 (the shared Redis): pass a private '
                'redis-server\'s URL',
            )
        kwargs: dict[str, Any] = {}
        db = parts.path.lstrip('/')
        if db:
            kwargs['db'] = int(db)
        if parts.password is not None:
            kwargs['password'] = urllib.parse.unquote(parts.password)
            if parts.username:
                kwargs['username'] = urllib.parse.unquote(parts.username)
        return cls(host, port, kwargs)

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, **self.kwargs)


def _is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Bench:
    redis: RedisConfig
    namespace: str
    quick: bool
    stats: redis.Redis  # the bench's own connection, for INFO only

    def exchange(self, direct: bool = True) -> HybridExchange:
        kind = HybridExchange if direct else RedisOnlyHybridExchange
        # interface='lo': listen on 127.0.0.1 whatever the hostname resolves to.
        return kind(
            self.redis.host,
            self.redis.port,
            interface='lo',
            namespace=self.namespace,
            redis_kwargs={'max_connections': REDIS_MAX_CONNECTIONS, **self.redis.kwargs},
        )

    def rpush_calls(self) -> int:
        stats = self.stats.info('commandstats')
        return int(stats.get('cmdstat_rpush', {}).get('calls', 0))


def emit(bench: str, variant: str, samples_ns: list[int]) -> None:
    """Print one row as the Rust bench does (same percentile rule)."""
    samples = sorted(samples_ns)

    def us(ns: float) -> float:
        return round(ns / 1e3, 1)

    def p(q: float) -> float:
        return us(samples[round((len(samples) - 1) * q)])

    row = {
        'impl': IMPL,
        'bench': bench,
        'variant': variant,
        'p50_us': p(0.5),
        'p99_us': p(0.99),
        'mean_us': us(sum(samples) / len(samples)),
    }
    print(json.dumps(row), flush=True)


def check(back: Any, payload: bytes) -> None:
    if not isinstance(back, bytes) or len(back) != len(payload):
        got = f'{type(back).__name__} of {len(back)}' if hasattr(back, '__len__') else repr(back)
        raise BenchError(f'echo of {len(payload)} bytes came back as {got}')
    if len(payload) <= 10_000 and back != payload:
        raise BenchError(f'echo of {len(payload)} bytes came back altered')


def close_all(what: str, *steps: Callable[[], Any]) -> None:
    """Run every cleanup step, even after one fails; exit if they hang."""
    errors = []
    with deadline(CLEANUP_TIMEOUT_S, what):
        for step in steps:
            try:
                step()
            except Exception as e:
                log(f'error while {what}: {type(e).__name__}: {e}')
                errors.append(e)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Exit the process if the block takes longer than `seconds`."""
    done = threading.Event()

    def watch() -> None:
        if not done.wait(seconds):
            log(f'error: {what} took more than {seconds:.0f} s; exiting')
            os._exit(1)

    watcher = threading.Thread(target=watch, name='bench-deadline', daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


# ------------------------------------------------------------- round trips


def round_trips(bench: Bench, path: str) -> None:
    """Echo round trips at every size, through `path` ('direct' or 'redis')."""
    direct = path == 'direct'
    agent_x = bench.exchange(direct)
    caller_x = bench.exchange(direct)
    launcher = ThreadLauncher()
    handle = None
    try:
        agent = launcher.launch(Echo(), agent_x)
        # A client of the other exchange: its own client id and mailbox
        # (TCP listener and Redis watcher) in caller_x.
        handle = caller_x.get_handle(agent.agent_id).bind_as_client()
        for label, size in SIZES:
            n = (QUICK_SAMPLES if bench.quick else SAMPLES)[label]
            warm = max(n // 10, 2)
            payload = b'\x5a' * size
            for _ in range(warm):
                check(handle.action('echo', payload).result(ACTION_TIMEOUT_S), payload)
            if direct and (
                agent.agent_id not in caller_x._address_cache
                or handle.mailbox_id not in agent_x._address_cache
            ):
                raise BenchError('the warm-up did not find the peer-to-peer path')
            gc.collect()
            pushes = bench.rpush_calls()
            times = []
            for _ in range(n):
                t = time.perf_counter_ns()
                back = handle.action('echo', payload).result(ACTION_TIMEOUT_S)
                times.append(time.perf_counter_ns() - t)
                check(back, payload)
            pushes = bench.rpush_calls() - pushes
            if direct and pushes != 0:
                raise BenchError(f'echo {label} direct: {pushes} messages went through Redis')
            if not direct and pushes < 2 * n:
                raise BenchError(f'echo {label} redis: {pushes} RPUSH for {2 * n} messages')
            emit('action round trip', f'echo {label} {path}', times)
            log(f'echo {label} {path}: {n} samples, {pushes} RPUSH')
    finally:
        close_all(
            f'shutting down the {path} round trips',
            launcher.close,  # shuts the agent down and joins its thread
            lambda: handle is not None and handle.close(),
            caller_x.close,
            agent_x.close,
        )


# ------------------------------------------------------------- startup


def startup(bench: Bench) -> None:
    """Launch to first action, for agents launched one after another."""
    count = QUICK_STARTUP_AGENTS if bench.quick else STARTUP_AGENTS
    agent_x = bench.exchange()
    caller_x = bench.exchange()
    launcher = ThreadLauncher()

    # One client mailbox in caller_x for all the handles, as 0.1.0's Manager
    # does it (a multiplexer whose listener thread routes responses by
    # label), but in an exchange of its own so that the agents' exchange is
    # not the caller's.
    def refuse(request: RequestMessage) -> None:
        caller_x.send(request.src, request.error(TypeError('a client serves no actions')))

    client = MailboxMultiplexer(caller_x.register_client(), caller_x, refuse)
    listener = threading.Thread(target=client.listen, name='bench-client-listener')
    listener.start()
    try:
        # The client's listener publishes its address from its own thread:
        # wait for it, so that no agent answers into the Redis queue.
        address_key = caller_x._address_key(client.mailbox_id)
        for _ in range(500):
            if bench.stats.exists(address_key):
                break
            time.sleep(0.01)
        else:
            raise BenchError('the client mailbox never published its address')
        gc.collect()
        pushes = bench.rpush_calls()
        payload = b'\x01'
        times = []
        for _ in range(count):
            t = time.perf_counter_ns()
            agent = launcher.launch(Echo(), agent_x)
            handle = client.bind(caller_x.get_handle(agent.agent_id))
            back = handle.action('echo', payload).result(ACTION_TIMEOUT_S)
            times.append(time.perf_counter_ns() - t)
            check(back, payload)
        pushes = bench.rpush_calls() - pushes
        emit('startup', f'launch to first action (each of {count})', times)
        # A first request sent before the new agent's listener has published
        # its address goes into the agent's Redis queue (0.1.0's offline path).
        log(f'startup: {count} agents; {pushes} of {count} first requests went through Redis')
    finally:
        close_all(
            'shutting down the startup agents',
            launcher.close,  # shuts every agent down and joins its thread
            client.close,  # terminates the client mailbox: the listener returns
            listener.join,
            caller_x.close,
            agent_x.close,
        )


# ------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--redis-url',
        required=True,
        help='a private Redis, redis://127.0.0.1:PORT (never 127.0.0.1:6379)',
    )
    parser.add_argument('--quick', action='store_true', help='fewer samples')
    parser.add_argument(
        '--namespace',
        help='Redis key namespace for both exchanges (default: a random one)',
    )
    args = parser.parse_args(argv)

    try:
        version = importlib.metadata.version('academy-py')
        if version != ACADEMY_VERSION:
            raise BenchError(f'academy-py is {version}, not {ACADEMY_VERSION}')
        config = RedisConfig.parse(args.redis_url)
        stats = config.client()
        try:
            stats.ping()
        except redis.exceptions.RedisError as e:
            raise BenchError(f'no Redis at {args.redis_url}: {e}') from None
        namespace = args.namespace or f'bench-{uuid_to_base32(uuid.uuid4())}'
        bench = Bench(config, namespace, args.quick, stats)
        log(f'academy-py {version}, Redis {config.host}:{config.port}, namespace {namespace}, '
            f'{"quick" if args.quick else "full"} run, pid {os.getpid()}')
        sections: list[tuple[str, Callable[[], None]]] = [
            ('round trips, direct', lambda: round_trips(bench, 'direct')),
            ('round trips, redis', lambda: round_trips(bench, 'redis')),
            ('startup', lambda: startup(bench)),
        ]
        try:
            for name, section in sections:
                t = time.perf_counter()
                section()
                log(f'{name}: done in {time.perf_counter() - t:.1f} s')
        finally:
            if args.namespace is None:
                # The namespace is the bench's own: leave no keys behind.
                keys = list(stats.scan_iter(match=f'{namespace}:*', count=1000))
                for i in range(0, len(keys), 1000):
                    stats.delete(*keys[i : i + 1000])
            stats.close()
    except BenchError as e:
        log(f'error: {e}')
        return 1
    except Exception as e:  # a failure inside academy: say where, then fail
        import traceback

        traceback.print_exc()
        log(f'error: {type(e).__name__}: {e}')
        return 1

    leftover = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if leftover:
        log(f'error: threads still running after cleanup: {", ".join(leftover)}')
        return 1
    return 0


if __name__ == '__main__':
    status = main()
    if status != 0:
        # After a failure some of academy's threads may still be running;
        # do not wait for them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)

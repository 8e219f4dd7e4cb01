"""The Python side of tests/interop.rs, on academy-py 1.0.0.

    academy_peer.py agent  --port P --namespace NS [--heartbeat S]
        serves a Python Calculator agent until it is shut down; prints
        `AGENT_ID <uuid>` once it is registered and `AGENT_EXITED` at the end.
    academy_peer.py calls  --port P --namespace NS
        discovers the Rust agent `rust.Calculator` and checks what it answers.
    academy_peer.py shutdown --port P --namespace NS --id UUID [--keep]
        asks an agent to shut down (terminating its mailbox unless --keep).
    academy_peer.py status --port P --namespace NS --id UUID --expect WORD
        waits (at most 60 s) until the agent's status is WORD.

Each check prints `ok <what>`; a failed check raises (exit code 1).
"""

import argparse
import asyncio
import os
import sys
import traceback
import time
import uuid

from academy.agent import Agent, action
from academy.exception import AcademyRemoteError
from academy.exchange import HybridExchangeFactory
from academy.exchange.client_config import ExchangeClientConfig
from academy.handle import Handle
from academy.identifier import AgentId
from academy.runtime import Runtime, RuntimeConfig
from academy.serialize import SerializationStrategy

JSON = SerializationStrategy.JSON


class Calculator(Agent):
    """A Python agent for Rust to call (discovered as `__main__.Calculator`)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = 0

    @action
    async def add(self, a, b):
        return a + b

    @action
    async def describe_point(self, point):
        return {'x': point['x'] * 2, 'y': point['y'] * 2, 'label': point['label'].upper()}

    @action
    async def fail(self, message):
        raise ValueError(message)

    @action
    async def sleep(self, seconds):
        self.sleeping += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.sleeping -= 1
        return seconds

    @action
    async def running(self):
        return self.sleeping

    @action
    async def unencodable(self):
        return object()


def ok(what):
    print(f'ok {what}', flush=True)


def factory(args):
    config = ExchangeClientConfig(heartbeat_interval=args.heartbeat, stale_heartbeat_threshold=3)
    return HybridExchangeFactory('127.0.0.1', args.port, namespace=args.namespace, interface='lo', config=config)


async def eventually(what, check, within=60.0):
    deadline = time.monotonic() + within
    while True:
        if await check():
            return ok(what)
        if time.monotonic() > deadline:
            raise AssertionError(f'not within {within} s: {what}')
        await asyncio.sleep(0.05)


async def serve(args):
    exchange = factory(args)
    user = await exchange.create_user_client(name='launcher')
    registration = await user.register_agent(Calculator, name='py-calculator')
    print(f'AGENT_ID {registration.agent_id.uid}', flush=True)
    runtime = Runtime(Calculator(), exchange_factory=exchange, registration=registration, config=RuntimeConfig())
    await runtime.run_until_complete()
    print('AGENT_EXITED', flush=True)


async def calls(args):
    client = await factory(args).create_user_client(name='py-caller')
    ids = []

    async def found():
        nonlocal ids
        ids = await client.discover('rust.Calculator')
        return len(ids) == 1

    await eventually('discovered rust.Calculator', found)
    agent = ids[0]
    assert (await client.status(agent)).value == 'ACTIVE'
    ok('status ACTIVE')
    everyone = await client.discover('academy.agent.Agent')
    assert agent in everyone, everyone
    ok('discovered as an academy.agent.Agent')

    calc = Handle(agent, exchange=client, request_serializer=JSON)
    total = await calc.add(2, 3)
    assert total == 5 and isinstance(total, int), repr(total)
    ok('add(2, 3) == 5')
    greeting = await calc.action('greet', 'Ada', punctuation='!')
    assert greeting == 'Hello, Ada!', repr(greeting)
    ok('greet with a keyword argument')
    point = await calc.scale({'x': 1.5, 'y': -2.0, 'label': 'p'}, 2.0)
    assert point == {'x': 3.0, 'y': -4.0, 'label': 'p'}, repr(point)
    ok('scale a struct')
    ratio = await calc.divide(1.0, 4.0)
    assert ratio == 0.25 and isinstance(ratio, float), repr(ratio)
    ok('divide(1, 4) == 0.25')
    try:
        await calc.divide(1.0, 0.0)
        raise AssertionError('dividing by zero did not raise')
    except AcademyRemoteError as e:
        assert 'CalcError' in str(e) and 'DivisionByZero' in str(e), str(e)
        ok(f'divide by zero raised: {e}')
    try:
        await calc.action('no_such_action')
        raise AssertionError('an unknown action did not raise')
    except AcademyRemoteError as e:
        assert 'no_such_action' in str(e), str(e)
        ok('an unknown action raised')

    pickled = Handle(agent, exchange=client)
    try:
        await pickled.add(2, 3)
        raise AssertionError('a pickled request was answered')
    except AcademyRemoteError as e:
        assert 'SerializationStrategy.JSON' in str(e), str(e)
        ok('a pickled request was refused, saying how to choose JSON')

    await calc.ping(timeout=30)
    ok('ping')

    sleeping = asyncio.create_task(calc.sleep(60_000))

    async def started():
        return await calc.running() == 1

    await eventually('the Rust action started', started)
    sleeping.cancel()
    try:
        await sleeping
    except asyncio.CancelledError:
        pass

    async def stopped():
        return await calc.running() == 0

    await eventually('cancelled: the Rust action stopped', stopped)
    assert await calc.add(1, 1) == 2
    ok('the agent answers after a cancel')


def agent_id(args):
    return AgentId(uid=uuid.UUID(args.id))


async def shutdown(args):
    client = await factory(args).create_user_client(name='py-stopper')
    handle = Handle(agent_id(args), exchange=client, request_serializer=JSON)
    await handle.shutdown(terminate=not args.keep)
    ok('shutdown sent')
    await asyncio.sleep(0.5)  # the answer arrives (shutdown does not wait for it)


async def status(args):
    client = await factory(args).create_user_client(name='py-watcher')
    agent = agent_id(args)

    async def reached():
        return (await client.status(agent)).value == args.expect

    await eventually(f'status {args.expect}', reached)


async def panics(args):
    client = await factory(args).create_user_client(name='py-panics')
    calc = Handle(agent_id(args), exchange=client, request_serializer=JSON)
    # An async action's panic leaves the agent serving; a sync one's ends it.
    for action in ['explode_later', 'explode']:
        try:
            await asyncio.wait_for(calc.action(action), timeout=10)
            raise AssertionError(f'{action} did not raise')
        except AcademyRemoteError as e:
            assert 'panicked' in str(e) and 'kaboom' in str(e), str(e)
            ok(f'{action} raised: {e}')
        if action == 'explode_later':
            assert await calc.add(1, 1) == 2
            ok('the agent answers after an async panic')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('command', choices=['agent', 'calls', 'panics', 'shutdown', 'status'])
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--namespace', required=True)
    parser.add_argument('--heartbeat', type=float, default=30.0)
    parser.add_argument('--id')
    parser.add_argument('--keep', action='store_true')
    parser.add_argument('--expect')
    args = parser.parse_args()
    command = {'agent': serve, 'calls': calls, 'panics': panics, 'shutdown': shutdown, 'status': status}[args.command]
    asyncio.run(run(command, args))


async def run(command, args):
    # academy-py 1.0.0's client can hang while closing (its heartbeat task,
    # cancelled mid-command, never finishes; seen with a 0.3 s heartbeat),
    # and so can asyncio.run's own cleanup: once the checks are done, leave
    # without closing anything.
    try:
        # An agent serves until it is shut down; every check ends within 90 s.
        await (command(args) if command is serve else asyncio.wait_for(command(args), timeout=90))
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


if __name__ == '__main__':
    main()

"""Discovers the Rust agent `rust.Simulator` and calls it from Python
Academy 1.0, with JSON arguments.

    python python_caller.py --port 6379 --namespace demo
"""

import argparse
import asyncio
import os
import sys

from academy.exception import AcademyRemoteError
from academy.exchange import HybridExchangeFactory
from academy.handle import Handle
from academy.serialize import SerializationStrategy


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=6379)
    parser.add_argument('--namespace', default='default')
    args = parser.parse_args()
    factory = HybridExchangeFactory(args.host, args.port, namespace=args.namespace, interface='lo')
    client = await factory.create_user_client(name='python-caller')
    for _ in range(100):
        found = await client.discover('rust.Simulator')
        if found:
            break
        await asyncio.sleep(0.1)
    else:
        sys.exit('rust.Simulator not found')
    # Rust agents read JSON: choose it for the handle (pickle is Python's default).
    simulator = Handle(found[0], exchange=client, request_serializer=SerializationStrategy.JSON)
    run = await simulator.simulate(1000, 0.3, people=500)
    print(f'python caller: simulate(1000 steps, rate 0.3) -> peak {run["peak"]} at step {run["peak_step"]}, '
          f'{run["ever_infected"]} ever infected')
    try:
        await simulator.simulate(10, 1.5, 100)
    except AcademyRemoteError as e:
        print(f'python caller: simulate(rate 1.5) raised {e}')
    print(f'python caller: ping took {await simulator.ping():.4f} s')
    sys.stdout.flush()
    os._exit(0)  # academy-py 1.0.0 can hang closing its client


if __name__ == '__main__':
    asyncio.run(main())

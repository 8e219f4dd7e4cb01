"""Serves a `forecast.Forecaster` on an Academy 1.0 hybrid exchange until it
is shut down; prints `AGENT_ID <uuid>` once registered.

    python python_agent.py --port 6379 --namespace demo
"""

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from academy.exchange import HybridExchangeFactory  # noqa: E402
from academy.runtime import Runtime, RuntimeConfig  # noqa: E402
from forecast import Forecaster  # noqa: E402


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=6379)
    parser.add_argument('--namespace', default='default')
    args = parser.parse_args()
    factory = HybridExchangeFactory(args.host, args.port, namespace=args.namespace, interface='lo')
    launcher = await factory.create_user_client(name='forecast-launcher')
    registration = await launcher.register_agent(Forecaster, name='forecaster')
    print(f'AGENT_ID {registration.agent_id.uid}', flush=True)
    runtime = Runtime(Forecaster(), exchange_factory=factory, registration=registration, config=RuntimeConfig())
    await runtime.run_until_complete()
    print('python agent: shut down', flush=True)
    os._exit(0)  # academy-py 1.0.0 can hang closing its clients


if __name__ == '__main__':
    asyncio.run(main())

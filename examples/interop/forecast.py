"""A Python Academy 1.0 agent that a Rust program calls: discovered by its
dotted name, `forecast.Forecaster` (this module's name and the class's)."""

from academy.agent import Agent, action


class Forecaster(Agent):
    """Forecasts the next value of a series (a stand-in for a Python model)."""

    @action
    async def predict(self, history, horizon):
        """The series continued `horizon` steps by its mean step."""
        if len(history) < 2:
            raise ValueError(f'need at least two points, got {len(history)}')
        step = (history[-1] - history[0]) / (len(history) - 1)
        return [history[-1] + step * (i + 1) for i in range(horizon)]

"""Language-model workflows built on :meth:`Model.generate`: steering while the model writes.

>>> r = cs.steer_generation("facts-gpt", prompts, "layers.1", v, [0.0, 4.0, 8.0], target="Harrowgate")
>>> r.fraction()                    # per strength: the fraction of continuations that contain the target
"""
from ._steer import SteeringGeneration, steer_generation

__all__ = ["SteeringGeneration", "steer_generation"]

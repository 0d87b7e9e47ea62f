"""Language-model workflows built on :meth:`Model.generate`: steering while the model writes.

>>> r = cs.steer_generation("facts-gpt", prompts, "layers.1", v, [0.0, 4.0, 8.0], target="Harrowgate")
>>> r.fraction()                    # per strength: the fraction of continuations that contain the target
>>> M = cs.steering_matrix_generation("facts-gpt", prompts, "layers.2", {"Estrova": v1, "Arvena": v2}, 4.0)
"""
from ._matrix import SteeringMatrixGeneration, steering_matrix_generation
from ._steer import SteeringGeneration, steer_generation

__all__ = ["SteeringGeneration", "SteeringMatrixGeneration", "steer_generation", "steering_matrix_generation"]

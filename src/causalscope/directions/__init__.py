"""Feature directions: class directions, steering, corrupt-and-restore, probes with controls.

>>> import causalscope as cs
>>> d = cs.directions.class_directions("digits-mlp", cs.data.digits(split="test"), "act2")  # doctest: +SKIP
"""
from ._classes import DirectionsResult, SimilarityMatrix, class_directions
from ._probe_fit import METRICS as PROBE_METRICS
from ._probe_steering import SteeringCheck
from ._probes import ProbeResult, probe, probe_steering
from ._restoration import RestorationResult, corrupt, corrupt_and_restore
from ._steering import SteeringMatrix, SteeringResult, steer, steering_matrix

__all__ = ["PROBE_METRICS", "DirectionsResult", "ProbeResult", "RestorationResult", "SimilarityMatrix",
           "SteeringCheck", "SteeringMatrix", "SteeringResult", "class_directions", "corrupt", "corrupt_and_restore",
           "probe", "probe_steering", "steer", "steering_matrix"]

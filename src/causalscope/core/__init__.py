"""The core every method family builds on: sites, interventions, the engine, the model wrapper, metrics.

>>> from causalscope.core import Engine, Site, Patch
>>> Site("layers.1", positions=[2, 3]).name
'layers.1[pos=2,3]'

Families import from here (``from ..core import Engine``), never from a ``core._module``; what two families
share lives here (docs/decisions/0005-layout.md).
"""
from ._cells import (
    GRIDS,
    Cell,
    first_difference,
    input_pair,
    length_groups,
    model_input,
    position_list,
    segment_safe,
    seq_len,
    sweep_cells,
    token_ids,
    unique_full_sites,
)
from ._engine import CPU_MAX_ROWS, ActivationCache, Engine, Run
from ._engine_generate import Generation, generate
from ._guard import preserved
from ._interventions import (
    Add,
    ApplyContext,
    Intervention,
    Mean,
    Noise,
    Patch,
    Project,
    Resample,
    Scale,
    Set,
    Zero,
    as_intervention,
)
from ._metrics import (
    Metric,
    call_metric,
    is_last_only,
    logit,
    logit_diff,
    output_value,
    prob,
    resolve_metric,
    takes_lengths,
)
from ._model import Model
from ._pairs import (
    POSITION_SWEEPS,
    PairMetric,
    aligned_positions,
    check_align,
    for_pairs,
    positions_setting,
    prompt_tokens,
)
from ._precision import SPAN_ULPS, check_span, flag_span, model_dtype
from ._progress import tqdm
from ._rows import Rows
from ._sae_sites import SparseCoder, is_transcoder
from ._segments import (
    STEP_OVER_TOKEN_LAYER,
    TOKEN_LAYER_EXPONENT,
    block_staircase,
    block_step,
    floor_groups,
    full_rows,
    pick_schedule,
    schedule_costs,
    segmented_ok,
    staircase,
    swapped_rows,
)
from ._settings import LIST_LIMIT, callable_setting, input_setting
from ._sites import Site, as_site
from ._unembed import unembed_fn
from .adapters import Adapter, ArchitectureWarning, Batch, Resolved, SegmentedLM, adapter_for, primary, segmented

__all__ = [
    "GRIDS", "Cell", "first_difference", "full_rows", "swapped_rows", "input_pair", "model_input", "segment_safe",
    "segmented_ok", "Rows",
    "seq_len", "staircase", "sweep_cells", "token_ids", "unique_full_sites", "length_groups",
    "SegmentedLM", "STEP_OVER_TOKEN_LAYER", "TOKEN_LAYER_EXPONENT", "floor_groups",
    "block_staircase", "block_step", "pick_schedule", "schedule_costs", "segmented",
    "POSITION_SWEEPS", "PairMetric", "positions_setting", "LIST_LIMIT", "callable_setting", "input_setting",
    "position_list",
    "aligned_positions", "check_align", "for_pairs", "prompt_tokens",
    "CPU_MAX_ROWS", "ActivationCache", "Adapter", "Generation", "generate",
    "ArchitectureWarning", "Add", "ApplyContext", "Batch", "Engine", "Intervention", "Mean",
    "Metric", "Model", "Noise", "Patch", "Project", "Resample", "Resolved", "Run", "Scale", "Set", "Site", "Zero",
    "adapter_for", "as_intervention", "as_site", "call_metric", "is_last_only", "logit", "logit_diff", "output_value",
    "takes_lengths", "preserved", "tqdm", "SPAN_ULPS", "check_span", "flag_span", "model_dtype",
    "primary", "prob", "resolve_metric", "unembed_fn",
    "SparseCoder", "is_transcoder",
]

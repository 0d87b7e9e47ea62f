"""Keep the user's model exactly as it was: train/eval flags and hooks, also when a call raises."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn
from torch.utils.hooks import RemovableHandle


@contextlib.contextmanager
def preserved(model: nn.Module, eval_mode: bool = True) -> Iterator[list[RemovableHandle]]:
    """Run in eval mode (by default) and restore every module's training flag afterwards.

    Yields a list: handles appended to it are removed on exit, whatever happens.

    >>> with preserved(model) as handles:
    ...     handles.append(model.fc.register_forward_hook(fn))
    ...     model(x)
    """
    flags = [(m, m.training) for m in model.modules()]
    handles: list[RemovableHandle] = []
    try:
        if eval_mode and any(flag for _, flag in flags):  # already all in eval mode: nothing to switch
            model.eval()
        yield handles
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            if m.training is not flag:  # Module.__setattr__ is slow; write back only what changed
                m.training = flag

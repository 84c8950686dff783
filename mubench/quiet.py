"""Silence library chatter (dtype-cast notices, offline-mode hints) in commands that load models."""
from __future__ import annotations

import logging
import os
import sys
import warnings

# the libraries whose log level is set to "error", by their verbosity variable
_VERBOSITY_VARIABLES = {"diffusers": "DIFFUSERS_VERBOSITY", "transformers": "TRANSFORMERS_VERBOSITY"}


def quiet_libraries() -> None:
    """Offline mode, and diffusers' and transformers' logs at "error". Neither library is imported here (together
    some seconds): one not yet imported reads its verbosity variable when it is (a value the user set wins); one
    already imported has its logger set directly."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # mubench never downloads
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for library, variable in _VERBOSITY_VARIABLES.items():
        os.environ.setdefault(variable, "error")
        if library in sys.modules:  # configured already: its variable is no longer read
            logging.getLogger(library).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*TF32.*")
    warnings.filterwarnings("ignore", message=".*not writable.*")
    # compile=...: torch's C++ toolchain probe notes that a CPU-only machine has no CUDA runtime
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

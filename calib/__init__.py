"""Tiebreak: replace a production LLM with statistical confidence.

A plain Python package (no Streamlit): storage, import, sampling, the Bayesian calibration model,
forecasting, judges, the demo simulator and the CLI. The Streamlit pages only lay out what it
computes.
"""

__version__ = "0.1.0"

import os as _os

# No run may reach the internet except a configured provider: litellm fetches its price map at
# import unless told to use its bundled copy, and token counting may try the Hugging Face hub.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
_os.environ.setdefault("HF_HUB_OFFLINE", "1")

# PyTensor links BLAS for its C code; point it at OpenBLAS when the system has it (Debian's
# libopenblas-dev), else leave PyTensor's default (slower, with a warning) rather than fail to link.
if "PYTENSOR_FLAGS" not in _os.environ:
    import ctypes.util as _cu
    import glob as _glob

    if _glob.glob("/usr/lib/*/libopenblas.so") or _glob.glob("/usr/lib/libopenblas.so") or _cu.find_library("openblas"):
        _os.environ["PYTENSOR_FLAGS"] = "blas__ldflags=-lopenblas"

"""ecap (EditCaption): build, refine and judge training data for instruction-guided image editing.

This top-level module stays light: importing it, or running ``ecap --help``, never imports torch,
transformers, vLLM or any cloud SDK.
"""

from importlib import metadata

try:
    __version__ = metadata.version("editcaption")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

"""gyoza.yml: an op definition plus how to build its image (SPEC §8), and the files ``gyoza op init`` scaffolds.

Loading reports every problem at once, one line each, naming the field path::

    gyoza.yml: input_specs.top_k.type: unknown type 'integer' (expected one of string, int, float, ...)
"""

from gyoza.opfile.load import OpFileError, display_path, load_opfile
from gyoza.opfile.model import OpFile

__all__ = ["OpFile", "OpFileError", "display_path", "load_opfile"]

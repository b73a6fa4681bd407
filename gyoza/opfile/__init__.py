"""gyoza.yml: an op definition plus how to build its image (SPEC §8), and the files ``gyoza op init`` scaffolds.

Loading reports every problem at once, one line each, naming the field path::

    gyoza.yml: input_specs.top_k.type: unknown type 'integer' (expected one of string, int, float, ...)
"""

from gyoza.opfile.load import OpFileError, display_path, find_opfile, load_opfile, parse_opfile
from gyoza.opfile.model import OPFILE_NAME, BuildSpec, OpFile, default_image

__all__ = [
    "OPFILE_NAME",
    "BuildSpec",
    "OpFile",
    "OpFileError",
    "default_image",
    "display_path",
    "find_opfile",
    "load_opfile",
    "parse_opfile",
]

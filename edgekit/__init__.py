"""edgekit: from a folder of images to a verified model on a Raspberry Pi camera.

The base install is the runtime alone (``edgekit.runtime``); training and
conversion need the ``train`` / ``convert`` extras and import TensorFlow lazily.
"""

import sys as _sys

from edgekit._version import __version__
from edgekit.environment import arm32_note as _arm32_note
from edgekit.errors import EdgekitError

# The one import-time action: on a 32-bit Arm Python (32-bit Raspberry Pi OS), where the runtime's wheels do not
# exist, say so in one line rather than fail later on a missing module.
if (_note := _arm32_note()) is not None:
    print(_note, file=_sys.stderr)

__all__ = ["EdgekitError", "__version__"]

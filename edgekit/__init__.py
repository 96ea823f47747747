"""edgekit: from a folder of images to a verified model on a Raspberry Pi camera.

The base install is the runtime alone (``edgekit.runtime``); training and
conversion need the ``train`` / ``convert`` extras and import TensorFlow lazily.
"""

from edgekit._version import __version__
from edgekit.errors import EdgekitError

__all__ = ["EdgekitError", "__version__"]

import sys

from edgekit.cli.env import main_edgekit

sys.exit(main_edgekit())

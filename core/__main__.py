import sys

from laminae.cli import main

sys.exit(main())

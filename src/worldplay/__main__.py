import sys

from worldplay.cli import main

sys.exit(main())

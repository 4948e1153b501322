import sys

from crisync.cli import main

sys.exit(main())

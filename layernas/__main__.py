import sys

from layernas.cli import console_main

sys.exit(console_main())

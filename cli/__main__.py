import sys

from tdbnas.cli.main import main

sys.exit(main())

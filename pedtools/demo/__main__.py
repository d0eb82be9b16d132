import sys

from pedtools.demo.run import main

sys.exit(main())

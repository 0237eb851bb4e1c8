"""`python -m ifexp.report DIR`: the same as `ifexp-report DIR`."""

from ifexp.report import main

main()

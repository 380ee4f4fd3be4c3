"""`python -m bvmesh` is the `bvmesh` command."""

from .cli.main import main

main()

"""`python -m cj_runner` runs the `cj-run` command."""

from cj_runner.cli.run import main

if __name__ == "__main__":
    main()

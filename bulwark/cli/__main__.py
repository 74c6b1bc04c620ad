"""`python -m bulwark.cli`: the `bulwark` command from a checkout without installing it."""

from bulwark.cli import main

if __name__ == "__main__":
    main(prog_name="bulwark")

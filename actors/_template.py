"""Entry point of a template process (see _zygote):
``python -m actors._template FD PARENT_PID NAME USER MODULE,MODULE...``."""

from actors._zygote import main

if __name__ == "__main__":
    main()

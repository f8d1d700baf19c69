"""The template dir: Jinja templates (``<name>.py.j2``) and static modules (``<name>.py``).

A template renders one module per state. A static module is ordinary Python that no state
value changes: every build carries it verbatim (compiled once per toolchain, its artifact
reused from the compile cache by every later build), and the rendered modules import it
with ``from . import <name>``, passing it the tables the state specializes.
"""

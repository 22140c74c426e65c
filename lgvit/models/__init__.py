"""Model families, one file each: config -> blocks -> stage -> model -> a table of variants (`VARIANTS`).

This room knows only `lgvit.layers` (and `lgvit.constants`): it registers nothing and imports no
registry, converter, data or training code. `lgvit.registry` reads the tables.
"""

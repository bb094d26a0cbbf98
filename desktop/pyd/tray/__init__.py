"""`pyd tray`: a status icon with a menu per instance (issue 20, desktop presence).

`model.py` is the pure part (states -> icon kind and menu tree), `icons.py` draws the icons,
`clipboard.py` and `opener.py` choose the programs per OS, `actions.py` runs a menu's action
as a `pyd` subprocess (the tray never holds an instance's locks), `poll.py` follows the
status files the CLI reads, `app.py` is the pystray edge.
"""

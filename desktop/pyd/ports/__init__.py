"""Container ports on the host: which listeners the agent should hold, as values.

`model` turns the Docker Engine's view of published ports (and the user's manual forwards)
into `Forward` values, resolves clashes between them and says which listeners to open and
close. The sockets and SSH channels that carry the connections live elsewhere.
"""

"""Instance settings: the pure model (`model`) and the TOML file at the edge (`store`)."""

"""Domain logic: every rule, side effect and piece of SQL lives below here."""

"""Bug packs, one directory each (core/packs.py discovers them): the knowledge of one real bug
- its kernel listing, scenarios, fix variants, explanation rules - over the generic core."""

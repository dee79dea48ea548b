"""Who is calling (API keys, client certificates) and how much they may (limits shared by
every gateway)."""

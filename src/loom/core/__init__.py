"""The engine core: history in, new events and actions out. No database, clock or network here."""

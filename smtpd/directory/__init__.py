"""Who the recipients are and where their mail goes: accounts and routing."""

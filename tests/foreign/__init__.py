"""Foreign exporters for the import tests: scripts run in their own environments, and how those are made."""

"""Small shared utilities: settings, user-facing errors."""
